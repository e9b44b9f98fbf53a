"""Spark's Python worker daemon with the scoring stack imported once, before it forks workers.

Spark forks each Python worker from one daemon process (``pyspark.daemon``); by default every
worker then imports MLflow, pandas, PyArrow, torch and the model's code on its own, all of them
at once on a local master, while the JVM warms up on the same cores. Named by
``spark.python.daemon.module`` (local masters only: on a cluster the executors' Python is not
ours to assume), this module does those imports once in the daemon, and the workers inherit them
through fork.

Only the third-party modules are meant to be inherited: this checkout's own ``serve`` and ``train``
packages are forgotten before the first fork, so a worker loads the model with the copies shipped
inside it (a version keeps running the code it was logged with), as ``mlflow models serve`` does.

No torch operation runs here: torch's thread pools must start in the workers, after the fork.
"""

import mlflow.pyfunc
import mlflow.pyfunc.spark_model_cache  # noqa: F401
import pandas  # noqa: F401
import pyarrow  # noqa: F401
import torch  # noqa: F401
from pyspark import daemon

import serve.model.pyfunc  # noqa: F401  (what decoding, preprocessing and the network import)
from serve.model_loading import forget_our_packages

if __name__ == "__main__":
    forget_our_packages()
    daemon.manager()
