"""Make a Spark session ready to score before the job reads its input: the model loaded in a Python
worker on every executor slot, or one readable line saying why it cannot be.

The model's own logged input example is scored once per slot (``defaultParallelism`` partitions of
one row each). That starts Spark's Python workers and loads the model in each of them
(``spark_udf`` keeps it cached there, and Spark reuses its idle workers for the job), so:

- a model that cannot load or score on the executors (a missing dependency, an incompatible
  environment) stops the job with its first cause in one line, before any input is listed or read,
  instead of failing task after task with pages of JVM traces;
- the job's throughput is its scoring alone; loading is start-up, reported as such.

A model logged without an input example is not warmed up: the job then loads it in its first
tasks, as ``spark_udf`` does by itself.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator

import pandas as pd

from mnist_mlops.serve.batch.errors import BatchError

logger = logging.getLogger(__name__)


def input_example(model_uri: str) -> pd.DataFrame | None:
    """The model's logged input example (only that file is downloaded), or None if it has none."""
    import mlflow
    from mlflow.models import Model

    try:
        model = Model.load(model_uri)
        info = model.saved_input_example_info
        if not info:
            return None
        with tempfile.TemporaryDirectory() as folder:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{model_uri.rstrip('/')}/{info['artifact_path']}", dst_path=folder
            )
            example = model.load_input_example(folder)
    except Exception as exc:  # an example that cannot be read only costs the warm-up
        logger.warning("no warm-up: the input example of %s could not be read (%s)", model_uri, exc)
        return None
    return example if isinstance(example, pd.DataFrame) and len(example) else None


def first_cause(exc: BaseException) -> str:
    """The last ``SomeError: message`` line of a Spark error: the Python worker's own exception,
    not the JVM frames around it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines if line.partition(":")[0].endswith(("Error", "Exception"))]
    cause = causes[-1] if causes else (lines[0] if lines else type(exc).__name__)
    return " ".join(cause.split())[:300]


@contextlib.contextmanager
def _quiet(spark) -> Iterator[None]:
    """No JVM log lines while the warm-up runs: a failure is reported by us, in one line.

    After a failure the JVM stays quiet until the job ends: the failed warm-up's other tasks (one
    per slot) are still failing, or being killed, when the first failure reaches us, and Spark
    logs each with its Python traceback. A suite run with ``local[2]`` once printed one after our
    line, when the log level was set back here in a ``finally``.
    """
    spark.sparkContext.setLogLevel("OFF")
    yield  # an exception from the block leaves here: the level stays OFF
    spark.sparkContext.setLogLevel("WARN")


def warm_up(spark, udf, model_uri: str) -> bool:
    """Score the model's input example on every executor slot; False if it has none to score.

    Raises ``BatchError`` naming the first cause when the model cannot load or score there.
    """
    from pyspark.sql import functions as F

    example = input_example(model_uri)
    if example is None:
        return False
    slots = spark.sparkContext.defaultParallelism
    rows = pd.concat([example.iloc[:1]] * slots, ignore_index=True)
    frame = spark.createDataFrame(rows).repartition(slots)
    try:
        with _quiet(spark):
            answers = frame.select(udf(F.struct(*rows.columns)).alias("r")).collect()
    except Exception as exc:
        raise BatchError(f"cannot load the model {model_uri} on the Spark executors: {first_cause(exc)}") from None
    if len(answers) != slots:
        raise BatchError(f"the model {model_uri} answered {len(answers)} of {slots} warm-up rows")
    return True
