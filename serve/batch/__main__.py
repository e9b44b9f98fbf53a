"""``python -m serve.batch``: the same as ``mnist-batch``."""

from serve.batch.cli import main

main()
