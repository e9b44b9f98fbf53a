"""``mnist-registry``: list, evaluate, promote, roll back and read the history of model versions.

Exit status: 0 done, 1 an error (one line on stderr, nothing changed), 2 a usage error,
3 the promotion gate refused (the figures are printed, nothing changed).

Import-light until the options parse (``--help`` and usage errors answer at once); the
subcommands are ``registry.commands``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys

from mnist_mlops.common.cli import OneLineArgumentParser, add_option
from mnist_mlops.common.store import describe_store_failure, missing_store, tracking_uri
from mnist_mlops.registry.defaults import (
    AB_ALPHA,
    AB_MIN_FEEDBACK,
    AB_TAU,
    CHAMPION,
    DEFAULT_MIN_ACCURACY,
    DEFAULT_TOLERANCE,
)
from mnist_mlops.registry.errors import RegistryError
from mnist_mlops.registry.inference_log.location import DEFAULT_LOG, LOG_ENV, default_location

PROG = "mnist-registry"
EXIT_ERROR, EXIT_REFUSED = 1, 3


def _data_options(parser: argparse.ArgumentParser) -> None:
    add_option(
        parser,
        "data",
        default=None,
        help="labelled data: a folder of MNIST IDX files or a .parquet/.csv with 'label' and "
        "'image' or 'pixels' (default: the MNIST test set under --data_dir)",
    )
    add_option(parser, "data_dir", default=None, help="MNIST root (default: $MNIST_DATA_DIR or ./data)")
    add_option(parser, "max_samples", type=int, default=None, help="evaluate on the first N images only")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Versions, aliases, gated promotion and history of a model.")
    add_option(parser, "tracking_uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    add_option(parser, "model", default="mnist-cnn", help="registered model name (default: mnist-cnn)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)

    listing = commands.add_parser("list", help="versions with aliases, stages, accuracy")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    evaluate = commands.add_parser("evaluate", help="score a version (and a baseline) on labelled data")
    evaluate.add_argument("candidate", help="version number or alias")
    evaluate.add_argument("--baseline", default=CHAMPION, help="version or alias, or 'none' (default: champion)")
    _data_options(evaluate)
    evaluate.add_argument(
        "--sets",
        action="store_true",
        help="also score both on the evaluation sets (other writers, canvas, faint ink, paper, no digit)",
    )
    add_option(evaluate, "set_samples", type=int, default=300, help="images per evaluation set (default 300)")
    evaluate.add_argument("--json", action="store_true")

    promote = commands.add_parser("promote", help="gated move of an alias to a version")
    promote.add_argument("candidate", help="version number or alias")
    promote.add_argument("--to", default=CHAMPION, help="alias to move (default: champion)")
    promote.add_argument("--reason", default="", help="why, recorded in the history")
    promote.add_argument("--force", action="store_true", help="override the gate (recorded as forced)")
    add_option(
        promote,
        "tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"how far the candidate may trail the current holder's accuracy (default {DEFAULT_TOLERANCE})",
    )
    add_option(
        promote,
        "min_accuracy",
        type=float,
        default=DEFAULT_MIN_ACCURACY,
        help=f"lowest accuracy a candidate may have (default {DEFAULT_MIN_ACCURACY})",
    )
    _data_options(promote)
    promote.add_argument("--json", action="store_true")

    rollback = commands.add_parser("rollback", help="point the champion back at the previous one")
    rollback.add_argument("--reason", required=True, help="why, recorded in the history")
    rollback.add_argument("--alias", default=CHAMPION, help="alias to roll back (default: champion)")
    rollback.add_argument("--json", action="store_true")

    ab = commands.add_parser("abtest", help="analyse the gateway's A/B test and decide (--apply acts on it)")
    add_option(
        ab,
        "log",
        default=default_location(),
        help=f"the gateway's inference log: a SQLite file or a database URL (default ${LOG_ENV}, else {DEFAULT_LOG})",
    )
    ab.add_argument("--since", default=None, help="only traffic after this time: ISO 8601, or e.g. 30m, 2h, 1d ago")
    ab.add_argument("--apply", action="store_true", help="carry the decision out through the registry")
    add_option(ab, "alpha", type=float, default=AB_ALPHA, help=f"test error rate (default {AB_ALPHA})")
    add_option(
        ab,
        "tau",
        type=float,
        default=AB_TAU,
        help=f"accuracy difference the test is tuned to (default {AB_TAU})",
    )
    add_option(
        ab,
        "min_feedback",
        type=int,
        default=AB_MIN_FEEDBACK,
        help=f"feedback per arm before a decision (default {AB_MIN_FEEDBACK})",
    )
    add_option(
        ab,
        "min_accuracy",
        type=float,
        default=DEFAULT_MIN_ACCURACY,
        help=f"gate: lowest live accuracy a promoted challenger may have (default {DEFAULT_MIN_ACCURACY})",
    )
    add_option(
        ab,
        "max_feedback_share",
        type=float,
        default=1.0,
        help="hold the decision while one API key gave more than this share of the feedback (default 1: off)",
    )
    ab.add_argument("--json", action="store_true")

    show = commands.add_parser("history", help="who moved which alias, when and why")
    show.add_argument("--alias", default=None, help="only this alias")
    show.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # Before the logging set-up: importing MLflow sets its own loggers' level, which ours overrides.
    from mlflow.exceptions import MlflowException

    from mnist_mlops.registry.commands import COMMANDS
    from mnist_mlops.registry.promote import GateRefused

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # A tracking server that is down should fail in seconds, not after minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if (missing := missing_store(tracking_uri(args.tracking_uri))) is not None:
        sys.stderr.write(f"{PROG}: error: {missing}\n")  # and create no empty store on the way
        raise SystemExit(EXIT_ERROR)
    try:
        # MLflow prints run links to stdout when it talks to a tracking server; stdout is kept for
        # our output alone, so that --json stays parseable.
        with contextlib.redirect_stdout(sys.stderr):
            payload, text = COMMANDS[args.command](args)
    except GateRefused as refused:
        payload, text = refused.output
        print(json.dumps(payload, indent=2, default=str) if args.json else text)
        sys.stderr.write(f"{PROG}: {refused}\n")
        raise SystemExit(EXIT_REFUSED) from None
    except RegistryError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        raise SystemExit(EXIT_ERROR) from None
    except MlflowException as exc:
        sys.stderr.write(f"{PROG}: error: {describe_store_failure(tracking_uri(args.tracking_uri), exc)}\n")
        raise SystemExit(EXIT_ERROR) from None
    except Exception as exc:  # a store that is down surfaces as requests/SQLAlchemy errors
        if type(exc).__module__.split(".")[0] in ("requests", "urllib3", "sqlalchemy", "sqlite3"):
            sys.stderr.write(f"{PROG}: error: {describe_store_failure(tracking_uri(args.tracking_uri), exc)}\n")
            raise SystemExit(EXIT_ERROR) from None
        raise
    print(json.dumps(payload, indent=2, default=str) if args.json else text)


if __name__ == "__main__":
    main()
