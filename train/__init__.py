"""Training: MNIST data, the training loop, augmentation, what an MLflow run logs, and logging the
model package as the served pyfunc (``export``). The network and its input normalisation are the
model package's (``mnist_mlops.serve.model``), so training and serving cannot disagree on them.
Nothing here runs at import time.
"""
