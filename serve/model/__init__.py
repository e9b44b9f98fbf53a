"""The inference pipeline inside the MLflow model: decode -> preprocess -> CNN -> postprocess.

Shipped in the model's ``code_paths``; depends on torch, numpy, pandas, scipy, Pillow and mlflow
only (the logged requirements), never on the installed project.
"""

# Torch threads per process for the served model, when set (read by ``pyfunc.load_context``):
# batch scoring's workers and Spark's Python workers set it to the cores each of them owns. Defined
# here, in the one import-light module both the shipped model and the batch command line load.
THREADS_ENV = "MNIST_TORCH_THREADS"
