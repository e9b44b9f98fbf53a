"""Evaluation sets of real-world handwriting the pipeline was not tuned on (``sets``), rendered
with the primitives of ``render``; ``python -m mnist_mlops.registry.evalsets`` writes them to a
folder."""
