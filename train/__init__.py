"""Training: MNIST data, the CNN, the training loop and what an MLflow run logs.

Nothing here runs at import time. ``transforms`` and ``network`` depend on torch only, because the
served model ships them in its ``code_paths`` (see ``serve.model.export``).
"""
