"""``python -m mnist_mlops.train``: the same as ``mnist-train``."""

from mnist_mlops.train.cli import main

main()
