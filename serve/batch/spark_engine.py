"""The Spark engine: ``mlflow.pyfunc.spark_udf`` over a SparkSession on any master URL.

Folders are read with Spark's own ``binaryFile`` source on the executors, so no image passes
through the driver; tables are read with Spark's Parquet/CSV readers. The same command runs on a
cluster with ``--master spark://...`` (or ``yarn``, ``k8s://...``), whose executors need a Python
with the model's requirements and nothing of this project (``ship_our_code_with_the_tasks``).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd

from mnist_mlops.common.net import why_unreachable
from mnist_mlops.common.progress import interactive
from mnist_mlops.serve.batch.errors import BatchError
from mnist_mlops.serve.batch.scoring_model import ScoringModel, cannot_load
from mnist_mlops.serve.batch.sources import (
    IMAGE_SUFFIXES,
    MAX_ID_CHARS,
    IdxSource,
    TableSource,
    image_cell,
    open_source,
    read_file,
)
from mnist_mlops.serve.batch.spark_warmup import first_cause, warm_up
from mnist_mlops.serve.batch.summary import Summary
from mnist_mlops.serve.model import DTYPE_ENV, REQUEST_PIXELS_ENV, THREADS_ENV
from mnist_mlops.serve.model.limits import MAX_ENCODED_BYTES

logger = logging.getLogger(__name__)

# spark_udf casts each struct field with numpy (``astype``) whenever a column is not all null:
# None becomes NaN in a double and the text "None" in a string, and an int64 cannot hold a null
# at all. So label travels as a double, and the nulls of failed rows (label, confidence) and of
# scored rows (error) are restored in Spark below. A real error message is never "None".
OPEN_COST_BYTES = 8 * 1024
ARROW_BATCH_ROWS = 256
# Local masters only, where the JVM and the Python workers are ours and share a few cores: the
# optimising JIT compiler's threads cost a short job more than they save, the workers fork from a
# daemon that imported the scoring stack once, and the throughput collector, unlike G1, does not
# run threads beside the Python workers. Together a tenth off a 10,000-file job in local[2]
# (``make bench``, section batch, measures the engine against Spark's own floor).
LOCAL_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseParallelGC"
DAEMON_MODULE = "mnist_mlops.serve.batch.spark_daemon"
LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")
MASTER_REACH_TIMEOUT = 5.0  # seconds to open a TCP connection to a standalone master
RESULT_TYPE = "label double, confidence double, probabilities array<double>, error string"
# Models logged since the answer gained ``uncertain`` (spark_udf wants exactly the model's columns).
RESULT_TYPE_UNCERTAIN = "label double, confidence double, probabilities array<double>, uncertain boolean, error string"


def _local_driver_options() -> str:
    """The driver JVM's options on a local master: ``LOCAL_JVM_OPTIONS`` and our log set-up
    (``LOG_CONFIG``: Spark's own at WARN, without its start-up notices), when it is installed."""
    if LOG_CONFIG.is_file():
        return f"{LOCAL_JVM_OPTIONS} -Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}"
    return LOCAL_JVM_OPTIONS


def reach_master(master: str) -> None:
    """Raise BatchError, naming ``master``, when no standalone master listens at any of its
    addresses (``spark://host:port[,host:port]``): Spark's driver would retry for a minute and
    then print its stack traces. Other masters (local, yarn, k8s) are Spark's to check."""
    if not master.startswith("spark://"):
        return
    reasons = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            reasons.append(f"{address!r} has no port number")
            continue
        cause = why_unreachable(host, int(port), MASTER_REACH_TIMEOUT)
        if cause is None:
            return
        reasons.append(cause)
    raise BatchError(f"cannot reach the Spark master at {master}: {'; '.join(reasons)}")


def session(master: str):
    from pyspark.sql import SparkSession

    # Spark's Python workers must run this interpreter (the one with torch and the model's deps).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName("mnist-batch")
        .config("spark.ui.enabled", "false")
        # Spark's stage progress bar only when a person watches, as everywhere else in the CLI.
        .config("spark.ui.showConsoleProgress", str(interactive()).lower())
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        # binaryFile charges every file 4 MB of "open cost" by default, so a folder of small images
        # becomes one task per 32 files, and each task pays the Python UDF's fixed cost. Charging
        # what opening a small file really costs packs thousands per task (Spark still splits the
        # input across all cores).
        .config("spark.sql.files.openCostInBytes", str(OPEN_COST_BYTES))
        # The UDF receives Arrow batches of this many rows: enough for the network's batched
        # forward pass, small enough that a batch of 12-megapixel photos stays in memory.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_ROWS))
    )
    if not master.startswith("local"):
        ship_our_code_with_the_tasks()
    if master.startswith("local"):
        # The driver and executors are this machine: say so, rather than have Spark resolve the
        # hostname and warn that it found a loopback address.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.python.daemon.module", DAEMON_MODULE)
            .config("spark.driver.extraJavaOptions", _local_driver_options())
        )
    return builder.getOrCreate()


def ship_our_code_with_the_tasks() -> None:
    """On a cluster, executors need nothing of this project: the model travels with
    ``spark_udf`` (its own code inside), and our functions that run in tasks (reading a file into
    an image cell) are pickled by value, not by a reference their Python could not import."""
    from pyspark import cloudpickle

    import mnist_mlops

    cloudpickle.register_pickle_by_value(mnist_mlops)


def _glob_for_images() -> str:
    """The image suffixes in any case, as the pandas engine takes them (``x.Png`` too): Hadoop's
    globs have no case-insensitive flag, so each letter is a class, ``[pP][nN][gG]``."""
    classes = ("".join(f"[{c.lower()}{c.upper()}]" for c in s.lstrip(".")) for s in sorted(IMAGE_SUFFIXES))
    return "*.{" + ",".join(classes) + "}"


def listing_root(input_path: Path) -> Path:
    """The folder ``binaryFile`` ids are relative to: the input folder, or one image file's own
    folder (so its id is its name, as the pandas engine gives it). Resolved, as Spark spells
    paths; a file's own name is kept, not its symlink's target's."""
    return input_path.resolve() if input_path.is_dir() else input_path.absolute().parent.resolve()


def literal_path(path: Path) -> str:
    """``path`` as Hadoop takes it literally: ``load`` reads its argument as a glob, so a folder or
    file named ``digit [1]`` or ``{a,b}`` would name other files, or none. Hadoop's glob escapes
    a character with a backslash."""
    return re.sub(r"([\\\[\]{}*?])", r"\\\1", str(path))


def read_input(spark, input_path: Path, paths_outside: bool = False):
    """A DataFrame with ``id``, ``image`` (binary) or ``pixels`` (array<double>) and ``read_error``,
    and for image files the ``binaryFile`` DataFrame it was listed with (None for other inputs)."""
    from pyspark.sql import functions as F

    source = open_source(input_path, paths_outside)
    if isinstance(source, IdxSource):
        frames = [
            chunk[["id", "pixels"]].assign(pixels=lambda f: f["pixels"].map(lambda p: p.astype(float).tolist()))
            for chunk in source.chunks(10_000)
        ]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"id": [], "pixels": []})
        return spark.createDataFrame(frame).withColumn("read_error", F.lit(None).cast("string")), None
    if isinstance(source, TableSource):
        return _read_table(spark, source.path, paths_outside), None
    folder = listing_root(input_path)
    files = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", _glob_for_images())
        # A file deleted (or made unreadable) after the listing is skipped, not the whole job
        # failed; ``unread_files`` names it in an error row afterwards.
        .option("ignoreMissingFiles", "true")
        .load(literal_path(folder if input_path.is_dir() else folder / input_path.name))
    )
    # binaryFile's path is "file:" and the path as the file system spells it, not a URI: no
    # percent-encoding of spaces, "%" or non-ASCII letters. The id is what follows the folder.
    root = f"file:{str(folder).rstrip('/')}"
    relative = F.expr(f"substring(path, {len(root) + 2})")
    # A file over the model's limit is never read: the length filter is pushed into binaryFile,
    # which then skips the file (a file over 2 GB would fail the whole job there). It is listed
    # and gets no row, so ``unread_files`` names it in an error row after the job, with the
    # pandas engine's text. Not a second scan of the folder for such files, unioned in: that
    # cost every job 0.3 s per 10,000 files (a 10,000-file job in a warm JVM: 2.28-2.43 s
    # without it, 2.61-2.83 s with it), for files that are hardly ever there.
    readable = files.filter(F.col("length") <= MAX_ENCODED_BYTES).select(
        relative.alias("id"), F.col("content").alias("image"), F.lit(None).cast("string").alias("read_error")
    )
    return readable, files


def unread_files(spark, files, folder: Path, written: Path, fmt: str, rows: int) -> list[tuple[str, str]]:
    """(id, error) of each file Spark listed in ``folder`` but wrote no row for, in id order: a
    file over the model's size limit (the scan skips it unread), or one deleted or made unreadable
    between the listing and the read; the error is the pandas engine's (``sources.read_file``).
    ``rows`` is the number of rows written to ``written``; only when it falls short of the listing
    is the output read back.

    The listing stays in the JVM: counted with one call, and on a shortfall fetched as one string
    (``inputFiles()`` fetches one path per Py4J call: 2.4 s per 10,000 files). Its paths are URIs,
    so a newline in a file name arrives encoded and cannot split one.
    """
    listed = files._jdf.inputFiles()
    if len(listed) <= rows:
        return []
    jvm = spark.sparkContext._jvm
    uris = jvm.scala.collection.immutable.ArraySeq.unsafeWrapArray(listed).mkString("\n").split("\n")
    prefix = f"{str(folder).rstrip('/')}/"
    ids = [unquote(urlsplit(uri).path).removeprefix(prefix) for uri in uris]
    reader = spark.read.option("header", "true").csv if fmt == "csv" else spark.read.parquet
    written_ids = reader(literal_path(written)).select("id")
    listed_ids = spark.createDataFrame([(i,) for i in ids], "id string")
    missing = sorted(row.id for row in listed_ids.join(written_ids, "id", "left_anti").collect())
    gone = "it was missing or unreadable when Spark read it"
    return [(i, read_file(folder / i)[1] or f"cannot read {Path(i).name}: {gone}") for i in missing]


def _read_table(spark, path: Path, paths_outside: bool = False):
    """A table's rows as the pandas engine reads them (``sources.TableSource``): the same ids, and
    a path in the image column read from the file it names, on the executors."""
    from pyspark.sql import functions as F

    csv = path.suffix.lower() == ".csv"
    table = (
        spark.read.option("header", "true").csv(literal_path(path)) if csv else spark.read.parquet(literal_path(path))
    )
    if "image" not in table.columns and "pixels" not in table.columns:
        raise BatchError(f"{path} has no 'image' or 'pixels' column (columns: {', '.join(table.columns)})")
    text = "image" in table.columns and dict(table.dtypes)["image"] == "string"
    id_column = next((c for c in ("id", "path") if c in table.columns), None)
    if id_column is None:
        indexed = table.rdd.zipWithIndex().map(lambda pair: (*pair[0], str(pair[1])))
        table = indexed.toDF([*table.columns, "row_number"])
        row_number = F.col("row_number")
        short_text = F.length("image") < MAX_ID_CHARS
        table = table.withColumn("id", F.when(short_text, F.col("image")).otherwise(row_number) if text else row_number)
    else:
        table = table.withColumn("id", F.col(id_column).cast("string"))
    if text:
        table = table.withColumn("cell", _image_cells(str(path.parent.resolve()), paths_outside)("image"))
        table = table.withColumn("image", F.col("cell.image")).withColumn("read_error", F.col("cell.read_error"))
    else:
        table = table.withColumn("read_error", F.lit(None).cast("string"))
    columns = ["id"] + [c for c in ("image", "pixels") if c in table.columns] + ["read_error"]
    return table.select(*columns)


def _image_cells(base: str, paths_outside: bool):
    """A pandas UDF over a table's text image column: ``image_cell_reader``'s answers."""
    from pyspark.sql.functions import pandas_udf

    return pandas_udf(image_cell_reader(base, paths_outside), "image string, read_error string")


def image_cell_reader(base: str, paths_outside: bool = False):
    """A function over a table's text image cells, each read as the pandas engine reads it
    (``sources.image_cell``, relative to the folder ``base``): a path becomes its file's bytes,
    base64-encoded as the model takes text, or an error; other text passes as it is.

    It travels to the executors by value, not as an import: a Python worker that has loaded the
    model holds the model's own ``serve`` package, which has no ``serve.batch``, and a cluster's
    executors need not have this project installed.
    """
    from pyspark import cloudpickle

    from mnist_mlops.serve.batch import sources
    from mnist_mlops.serve.model import limits

    for module in (sources, limits):
        cloudpickle.register_pickle_by_value(module)

    def cells(values: pd.Series) -> pd.DataFrame:
        read = [image_cell(value, Path(base), paths_outside) for value in values]
        images = [base64.b64encode(data).decode("ascii") if isinstance(data, bytes) else data for data, _ in read]
        return pd.DataFrame({"image": images, "read_error": [error for _, error in read]})

    return cells


def _output_columns(scoring: ScoringModel, label, confidence, probabilities, uncertain, error) -> list:
    """The output's columns, in order, over a frame with an ``id``."""
    from pyspark.sql import functions as F

    return [
        "id",
        label.alias("label"),
        confidence.alias("confidence"),
        probabilities.alias("probabilities"),
        uncertain.alias("uncertain"),
        error.alias("error"),
        F.lit(scoring.name).alias("model_name"),
        F.lit(scoring.version).alias("model_version"),
        F.lit(scoring.run_id).alias("run_id"),
        F.current_timestamp().alias("scored_at"),
    ]


def _error_rows(spark, scoring: ScoringModel, errors: list[tuple[str, str]]):
    """Output rows for inputs that were not scored: (id, error) each."""
    from pyspark.sql import functions as F

    frame = spark.createDataFrame(errors, "id string, error string")
    none = F.lit(None)
    return frame.select(
        *_output_columns(
            scoring,
            none.cast("long"),
            none.cast("double"),
            none.cast("array<double>"),
            none.cast("boolean"),
            F.col("error"),
        )
    )


def _write(frame, output: Path, fmt: str, mode: str = "errorifexists") -> None:
    from pyspark.sql import functions as F

    if fmt == "csv":
        frame = frame.withColumn("probabilities", F.to_json("probabilities"))
        frame.write.mode(mode).option("header", "true").csv(str(output))
    else:
        frame.write.mode(mode).parquet(str(output))


def _counted(frame):
    """``frame`` observed while it is written: rows and failed rows counted in the same pass
    (Spark's ``Observation``), not by a second job reading the output back."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    counts = Observation("counts")
    observed = frame.observe(
        counts, F.count(F.lit(1)).alias("rows"), F.sum(F.col("error").isNotNull().cast("long")).alias("failed")
    )
    return observed, counts


def run(
    scoring: ScoringModel,
    input_path: Path,
    output: Path,
    master: str = "local[*]",
    env_manager: str = "local",
    fmt: str = "parquet",
    torch_threads: int = 1,
    overwrite: bool = False,
    paths_outside: bool = False,
) -> Summary:
    import mlflow
    from pyspark.sql import functions as F

    started = time.perf_counter()
    reach_master(master)
    spark = session(master)
    try:
        udf = mlflow.pyfunc.spark_udf(
            spark,
            scoring.uri,
            result_type=RESULT_TYPE_UNCERTAIN if _answers_uncertain(scoring.uri) else RESULT_TYPE,
            env_manager=env_manager,
            params={"on_error": "row"},
            # Spark runs one task per core: one torch thread each avoids oversubscribing the cores.
            # A chunk of a job is no client request: no per-call decoding budget (``serve.model.decode``).
            # The driver's number type choice reaches executors on other machines too.
            extra_env={
                THREADS_ENV: str(torch_threads),
                REQUEST_PIXELS_ENV: os.environ.get(REQUEST_PIXELS_ENV, "0"),
                DTYPE_ENV: os.environ.get(DTYPE_ENV, ""),
            },
        )
    except Exception as exc:  # read on the driver: no MLmodel, no pyfunc flavour, an unknown environment
        raise cannot_load(scoring.uri, exc) from None
    warm_up(spark, udf, scoring.uri)
    summary = Summary(engine=f"spark {master}", model_uri=scoring.uri, startup_seconds=time.perf_counter() - started)
    frame, files = read_input(spark, input_path, paths_outside)
    inputs = [c for c in ("image", "pixels") if c in frame.columns]
    result = frame.withColumn("r", udf(F.struct(*inputs)))
    label = F.when(F.isnan("r.label"), F.lit(None)).otherwise(F.col("r.label").cast("long"))
    confidence = F.when(F.isnan("r.confidence"), F.lit(None)).otherwise(F.col("r.confidence"))
    error = F.when(F.col("r.error") == "None", F.lit(None)).otherwise(F.col("r.error"))
    # A failed row's uncertain comes back False (numpy casts its null so): null again here.
    has_uncertain = "uncertain" in result.select("r.*").columns
    uncertain = F.when(label.isNull() | ~F.lit(has_uncertain), F.lit(None)).otherwise(
        F.col("r.uncertain") if has_uncertain else F.lit(None)
    )
    out = result.select(
        *_output_columns(
            scoring,
            label,
            confidence,
            F.col("r.probabilities"),
            uncertain.cast("boolean"),
            F.coalesce("read_error", error),
        )
    )
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        observed, counts = _counted(out)
        _write(observed, partial, fmt)
        rows, failed = counts.get["rows"], counts.get["failed"] or 0
        unread = unread_files(spark, files, listing_root(input_path), partial, fmt, rows) if files is not None else []
        if unread:
            _write(_error_rows(spark, scoring, unread), partial, fmt, mode="append")
            rows, failed = rows + len(unread), failed + len(unread)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, Exception) and not isinstance(exc, BatchError):
            raise BatchError(f"the Spark job failed: {first_cause(exc)}") from None
        raise
    if output.exists() and overwrite:
        if output.is_dir():
            shutil.rmtree(output)
        else:
            output.unlink()
    os.replace(partial, output)
    summary.scored, summary.failed = rows - failed, failed
    summary.seconds = time.perf_counter() - started
    return summary


def _answers_uncertain(model_uri: str) -> bool:
    """Whether the model's signature lists ``uncertain`` among its outputs."""
    import mlflow

    try:
        signature = mlflow.models.get_model_info(model_uri).signature
    except Exception:  # the loading that follows names what is wrong with the model
        return False
    return signature is not None and "uncertain" in signature.outputs.input_names()
