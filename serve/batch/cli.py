"""``mnist-batch`` (and the MLproject's ``batch_score`` entry point): score folders and tables.

    mnist-batch --model models:/mnist-cnn@champion --input photos/ --output scores.parquet
    mnist-batch --engine spark --master 'local[*]' --input photos/ --output scores/
    mnist-batch --watch inbox/ --output scored/

Exit status 0 with a summary when anything was scored; 1 with one line when nothing could be
scored, the model could not be loaded, or the input/output was unusable (nothing is written then).
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from mnist_mlops.common.cli import (
    OneLineArgumentParser,
    add_option,
    boolean,
    non_negative_float,
    positive_float,
    whole_number,
)
from mnist_mlops.serve.batch.errors import BatchError
from mnist_mlops.serve.batch.options import (
    AUTO,
    DEFAULT_CHUNK_ROWS,
    FORMAT_CHOICES,
    output_format,
    path_text,
    spark_master,
)
from mnist_mlops.serve.model import DTYPE_ENV, REQUEST_PIXELS_ENV, dtype_problem

PROG = "mnist-batch"
DEFAULT_MODEL = "models:/mnist-cnn@champion"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG, description="Score folders and tables of images with the registered model."
    )
    add_option(
        parser,
        "model",
        default=DEFAULT_MODEL,
        help=f"model URI; an alias is resolved once (default {DEFAULT_MODEL})",
    )
    add_option(
        parser,
        "input",
        default=None,
        help="a folder of images, one image, a .parquet/.csv table, or an MNIST IDX file",
    )
    add_option(parser, "output", type=path_text, required=True, help="result file (pandas) or folder (spark, watch)")
    add_option(parser, "engine", choices=("pandas", "spark"), default="pandas", help="default: pandas")
    add_option(parser, "master", type=spark_master, default="local[*]", help="Spark master URL (default local[*])")
    add_option(
        parser,
        "env_manager",
        choices=("local", "virtualenv", "uv", "conda"),
        default="local",
        help="how Spark executors get the model's environment (default local)",
    )
    add_option(
        parser,
        "format",
        choices=FORMAT_CHOICES,
        default=AUTO,
        help="output format: parquet or csv; auto (the default): csv for an output named *.csv, else parquet",
    )
    add_option(
        parser,
        "overwrite",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="replace an existing output",
    )
    add_option(
        parser,
        "chunk_rows",
        type=whole_number(1),
        default=DEFAULT_CHUNK_ROWS,
        help="rows per model call",
    )
    add_option(
        parser,
        "workers",
        type=whole_number(0, 256),
        default=0,
        help="pandas engine: scoring processes, each with the model loaded once; 0 (default) means one per "
        "core, 1 scores in this process",
    )
    add_option(
        parser,
        "allow_paths_outside",
        action="store_true",
        help="a table's image paths may name files outside the table's folder (default: error rows)",
    )
    add_option(parser, "watch", type=path_text, default=None, help="watch this folder and score each new file once")
    add_option(
        parser, "poll_seconds", type=positive_float, default=1.0, help="watch mode: how often to look (default 1)"
    )
    add_option(
        parser,
        "settle_seconds",
        type=non_negative_float,
        default=1.0,
        help="watch mode: a file must be unchanged this long before it is read (default 1)",
    )
    add_option(parser, "json", action="store_true", help="print the summary as JSON")
    return parser


def run(args, stop: threading.Event) -> int:
    if not args.watch:
        if not args.input:
            raise BatchError("--input is required (or --watch FOLDER)")
        if not Path(args.input).exists():
            raise BatchError(f"input {args.input} does not exist")
        from mnist_mlops.serve.batch.sources import nothing_to_score

        if Path(args.input).is_dir() and (empty := nothing_to_score(Path(args.input))):
            raise BatchError(empty)
        if args.engine == "spark" and importlib.util.find_spec("pyspark") is None:
            raise BatchError("the Spark engine needs pyspark, which is not installed: pip install 'mnist-mlops[spark]'")
        if args.engine == "pandas" and args.workers != 1:
            from mnist_mlops.serve.batch import forkserver

            forkserver.start()  # its imports overlap with this process's own, below
    # Heavy imports here, not at the top: the signal handlers are in place before they start.
    import mlflow

    from mnist_mlops.common.store import tracking_uri
    from mnist_mlops.serve.batch import pandas_engine
    from mnist_mlops.serve.batch.scoring_model import resolve
    from mnist_mlops.serve.batch.tracking import log_to_active_run
    from mnist_mlops.serve.batch.writers import check_output

    # After the imports: importing mlflow sets its loggers' levels again.
    for noisy in ("mlflow", "alembic", "py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    output = Path(args.output)
    fmt = output_format(args.format, output)
    if args.watch:
        from mnist_mlops.serve.batch.watch import watch

        scoring = resolve(args.model)
        summary = watch(
            scoring,
            Path(args.watch),
            output,
            fmt,
            args.poll_seconds,
            args.settle_seconds,
            min(args.chunk_rows, 256),
            stop=stop,
        )
    else:
        input_path = Path(args.input)
        check_output(output, args.overwrite, source=input_path, writes_folder=args.engine == "spark")
        scoring = resolve(args.model)
        if args.engine == "spark":
            from mnist_mlops.serve.batch import spark_engine

            summary = spark_engine.run(
                scoring,
                input_path,
                output,
                args.master,
                args.env_manager,
                fmt,
                overwrite=args.overwrite,
                paths_outside=args.allow_paths_outside,
            )
        else:
            summary = pandas_engine.run(
                scoring, input_path, output, fmt, args.chunk_rows, args.workers, args.allow_paths_outside
            )
    print(json.dumps(summary.to_dict()) if args.json else summary.line())
    log_to_active_run(summary, scoring, uri)
    if summary.scored == 0 and not args.watch:
        sys.stderr.write(f"{PROG}: error: nothing could be scored ({summary.failed} inputs failed)\n")
        return 1
    return 0


# Notices a Spark job printed on every run that tell its user nothing new: pyspark 4 warns that it
# does not fully support pandas 3 (the engines' equal outputs are tested), and MLflow warns that
# env_manager "local" does not rebuild the model's environment (the default here, on purpose).
SPARK_PANDAS_NOTICE = "PySpark does not yet fully support pandas"
LOCAL_ENV_NOTICE = 'with `env_manager="local"`'


def _quiet_known_spark_notices() -> None:
    warnings.filterwarnings("ignore", message=SPARK_PANDAS_NOTICE, category=FutureWarning)
    # Spark's Python workers (local masters) inherit this process's environment.
    os.environ["PYTHONWARNINGS"] = f"ignore:{SPARK_PANDAS_NOTICE}:FutureWarning"
    logging.getLogger("mlflow.pyfunc").addFilter(lambda record: LOCAL_ENV_NOTICE not in record.getMessage())


# Which ways of running read each option; given to another (at other than its default: the
# MLproject passes every parameter), it would be silently ignored, and a job would run other than
# its user thinks (``--master spark://...`` without ``--engine spark`` scoring on this machine).
READ_BY = {
    "input": ({"pandas", "spark"}, "scoring an input once (--watch scores files as they arrive)"),
    "engine": ({"pandas", "spark"}, "scoring an input once (--watch scores in this process)"),
    "master": ({"spark"}, "--engine spark"),
    "env_manager": ({"spark"}, "--engine spark"),
    "workers": ({"pandas"}, "the pandas engine"),
    "chunk_rows": ({"pandas", "watch"}, "the pandas engine and --watch (Spark sizes its own batches)"),
    "overwrite": ({"pandas", "spark"}, "scoring an input once (--watch appends to its output)"),
    "poll_seconds": ({"watch"}, "--watch"),
    "settle_seconds": ({"watch"}, "--watch"),
}


def unread_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The first option given that this way of running does not read, as a usage error; or None."""
    mode = "watch" if args.watch else args.engine
    for name, (modes, where) in READ_BY.items():
        if mode not in modes and getattr(args, name) != parser.get_default(name):
            return f"--{name} applies only to {where}"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if problem := unread_option(parser, args) or dtype_problem(os.environ.get(DTYPE_ENV)):
        parser.error(problem)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.engine == "spark":
        _quiet_known_spark_notices()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault(REQUEST_PIXELS_ENV, "0")  # a chunk of a job is no client request
    stop = threading.Event()
    if args.watch:
        # Installed first thing: a SIGINT/SIGTERM at any moment stops the watch cleanly.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    else:
        # A job stopped by SIGTERM unwinds like Ctrl-C: its workers are stopped and its partial
        # output removed, instead of the process vanishing mid-write.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code = run(args, stop)
    except BatchError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: error: interrupted (an output is published only when its job completes)\n")
        raise SystemExit(130) from None
    leave(code)


def leave(code: int) -> None:
    """End the process with ``code`` once a job is done, without the interpreter's teardown: with
    MLflow, pandas and Arrow imported it took about 0.9 s here after the summary was printed, a
    fifth of a 10,000-file job's wall time. Exit handlers still run (MLflow's, logging's,
    multiprocessing's, pyspark's), and the standard streams are flushed; the job's output is
    already published and its pools are shut."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
