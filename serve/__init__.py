"""Serving: the pyfunc model (``serve.model``), the A/B gateway and batch scoring.

``serve.model`` is shipped inside every logged model (its ``code_paths``), so it imports nothing
from the rest of the project except ``train.transforms`` and ``train.network``, which ship with it.
"""
