"""``python -m mnist_mlops.registry``: the same as ``mnist-registry``."""

from mnist_mlops.registry.cli import main

main()
