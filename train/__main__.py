"""``python -m train``: the same as ``mnist-train``."""

from train.cli import main

main()
