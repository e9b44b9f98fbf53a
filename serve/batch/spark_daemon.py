"""Spark's Python worker daemon with the scoring stack imported once, before it forks workers.

Spark forks each Python worker from one daemon process (``pyspark.daemon``); by default every
worker then imports MLflow, pandas, PyArrow and torch on its own, all of them at once on a local
master, while the JVM warms up on the same cores. Named by ``spark.python.daemon.module`` (local
masters only: on a cluster the executors' Python is not ours to assume), this module does those
imports once in the daemon, and the workers inherit them through fork. The model's own package
is imported by each worker from the model's code, under its own name.

No torch operation runs here: torch's thread pools must start in the workers, after the fork.
"""

import mlflow.pyfunc
import mlflow.pyfunc.spark_model_cache  # noqa: F401
import pandas  # noqa: F401
import PIL.Image  # noqa: F401
import pyarrow  # noqa: F401
import scipy.ndimage  # noqa: F401
import torch  # noqa: F401
from pyspark import daemon

if __name__ == "__main__":
    daemon.manager()
