"""Names every room uses, defined once: the registered model's default name, its aliases, and the
environment variables that point at data and set thread counts."""

DEFAULT_MODEL_NAME = "mnist-cnn"
CHAMPION, CHALLENGER = "champion", "challenger"  # production traffic; the candidate

DATA_DIR_ENV = "MNIST_DATA_DIR"  # where the MNIST root is when --data_dir is empty
