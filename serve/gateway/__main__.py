"""``python -m serve.gateway``: the same as ``mnist-gateway``."""

from serve.gateway.cli import main

main()
