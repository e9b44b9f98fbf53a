"""``python -m mnist_mlops.serve.gateway``: the same as ``mnist-gateway``."""

from mnist_mlops.serve.gateway.cli import main

main()
