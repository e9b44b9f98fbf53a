"""``python -m mnist_mlops.serve.batch``: the same as ``mnist-batch``."""

from mnist_mlops.serve.batch.cli import main

main()
