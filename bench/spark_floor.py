"""What Spark itself costs the batch job, and what that leaves the Spark engine: its ceiling.

``python -m bench.spark_floor --folder F --model M`` (``bench.batch`` runs it in a process of
its own, as each job runs) prints one JSON line with two measurements:

- **Spark's floor**: the least any Spark engine over ``binaryFile`` and a Python UDF does: the
  engine's own session on ``local[2]``, the folder listed and read by ``binaryFile`` with nothing
  around it (the engine's own read adds the ids, the image-suffix filter and the size limit),
  every image handed over Arrow to a Python UDF that answers a constant in the engine's result
  type, the paths and answers written as Parquet. The Python workers are started first (as the
  engine's warm-up starts them); then timed as the first job over files in its JVM (as the
  engine's job is), and the best of three more in the same JVM (class loading and the JIT paid:
  the most the floor leaves).
- **The model in one thread**: the pyfunc's ``predict`` over frames of ``ARROW_BATCH_ROWS`` PNG
  files with one torch thread: what each of Spark's Python workers does per Arrow batch.

Both are CPU-bound on the same cores, so the engine cannot beat the two run back to back: on
``local[N]`` an image costs at least ``1/floor + 1/(N * model)`` seconds. ``bench.batch`` reports
that ceiling against the bare network, next to the engine's measured ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from mnist_mlops.serve.batch.spark_engine import ARROW_BATCH_ROWS

MASTER = "local[2]"
SLOTS = 2  # local[2]: the cores the floor and the model share


def constant_answers():
    """A pandas UDF answering every row with one fixed scored answer, in the engine's result type.

    Built in a function, so cloudpickle ships it by value: Spark's Python workers fork from a
    daemon that forgot this checkout's packages (``serve.batch.spark_daemon``).
    """
    from pyspark.sql.functions import pandas_udf

    from mnist_mlops.serve.batch.spark_engine import RESULT_TYPE

    def answer(rows: pd.DataFrame) -> pd.DataFrame:
        n = len(rows)
        return pd.DataFrame(
            {"label": [3.0] * n, "confidence": [0.9] * n, "probabilities": [[0.01] * 10] * n, "error": ["None"] * n}
        )

    return pandas_udf(answer, RESULT_TYPE)


def floor_seconds(folder: Path, runs: int = 4) -> list[float]:
    """Seconds of each of ``runs`` floor jobs over ``folder``, in one Spark session (first: cold)."""
    from pyspark.sql import functions as F

    from mnist_mlops.serve.batch.spark_engine import literal_path, session

    spark = session(MASTER)
    answer = constant_answers()
    seconds = []
    try:
        slots = spark.sparkContext.defaultParallelism
        warm = spark.createDataFrame([(b"",)] * slots, "image binary").repartition(slots)
        warm.select(answer(F.struct("image"))).collect()  # the Python workers, up
        for _ in range(runs):
            output = Path(tempfile.mkdtemp(prefix="spark-floor-"))
            started = time.perf_counter()  # the folder is listed here, as in the engine's job
            files = spark.read.format("binaryFile").load(literal_path(folder))
            answered = files.select("path", answer(F.struct("content")).alias("r")).select("path", "r.*")
            answered.write.mode("overwrite").parquet(str(output / "out"))
            seconds.append(time.perf_counter() - started)
            shutil.rmtree(output)
    finally:
        spark.stop()
    return seconds


def model_one_thread(folder: Path, model_path: Path, seconds: float) -> float:
    """Images/s of the pyfunc over ``ARROW_BATCH_ROWS``-row frames of the folder's PNG bytes, with
    one torch thread (the engine sets one per Spark task)."""
    import mlflow
    import torch

    from bench.core import throughput
    from mnist_mlops.serve.model import THREADS_ENV

    os.environ[THREADS_ENV] = "1"
    torch.set_num_threads(1)
    pyfunc = mlflow.pyfunc.load_model(str(model_path))
    files = sorted(folder.iterdir())
    frames = [
        pd.DataFrame({"image": [f.read_bytes() for f in files[i : i + ARROW_BATCH_ROWS]]})
        for i in range(0, len(files), ARROW_BATCH_ROWS)
    ]
    cursor = iter(range(10**9))

    def step() -> int:
        frame = frames[next(cursor) % len(frames)]
        pyfunc.predict(frame, params={"on_error": "row"})
        return len(frame)

    rate, _ = throughput(step, seconds)
    return rate


def ceiling(floor_rate: float, model_rate: float, slots: int = SLOTS) -> float:
    """Images/s of the floor and the model run back to back on ``slots`` cores, with no other cost."""
    return 1.0 / (1.0 / floor_rate + 1.0 / (slots * model_rate))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spark_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="a folder of PNG files")
    parser.add_argument("--model", type=Path, required=True, help="the pyfunc's local folder")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to time the model")
    args = parser.parse_args(argv)
    count = sum(1 for _ in args.folder.iterdir())
    model_rate = model_one_thread(args.folder, args.model, args.seconds)
    first, *again = floor_seconds(args.folder)
    print(json.dumps({"count": count, "floor_first": first, "floor_again": min(again), "model_one_thread": model_rate}))


if __name__ == "__main__":
    main()
