"""``python -m registry``: the same as ``mnist-registry``."""

from registry.cli import main

main()
