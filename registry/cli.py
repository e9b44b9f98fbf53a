"""``mnist-registry``: list, evaluate, promote, roll back and read the history of model versions.

Exit status: 0 done, 1 an error (one line on stderr, nothing changed), 2 a usage error,
3 the promotion gate refused (the figures are printed, nothing changed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mlflow.exceptions import MlflowException

from registry import api, render
from registry import history as history_module
from registry.abtest import Policy, analyse
from registry.cliargs import OneLineArgumentParser, add_option
from registry.datasets import load
from registry.promote import DEFAULT_MIN_ACCURACY, DEFAULT_TOLERANCE, Gate, GateRefused, Move
from registry.store import RegistryError, describe_store_failure, tracking_uri
from registry.versions import CHAMPION, aliases, all_versions, require_model

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
        type=Path,
        default=Path("mnist-inference.db"),
        help="the gateway's inference log (default mnist-inference.db)",
    )
    ab.add_argument("--since", default=None, help="only traffic after this time: ISO 8601, or e.g. 30m, 2h, 1d ago")
    ab.add_argument("--apply", action="store_true", help="carry the decision out through the registry")
    add_option(ab, "alpha", type=float, default=Policy.alpha, help=f"test error rate (default {Policy.alpha})")
    add_option(
        ab,
        "tau",
        type=float,
        default=Policy.tau,
        help=f"accuracy difference the test is tuned to (default {Policy.tau})",
    )
    add_option(
        ab,
        "min_feedback",
        type=int,
        default=Policy.min_feedback,
        help=f"feedback per arm before a decision (default {Policy.min_feedback})",
    )
    add_option(
        ab,
        "min_accuracy",
        type=float,
        default=DEFAULT_MIN_ACCURACY,
        help=f"gate: lowest live accuracy a promoted challenger may have (default {DEFAULT_MIN_ACCURACY})",
    )
    ab.add_argument("--json", action="store_true")

    show = commands.add_parser("history", help="who moved which alias, when and why")
    show.add_argument("--alias", default=None, help="only this alias")
    show.add_argument("--json", action="store_true")
    return parser


def _mnist_root(args) -> Path:
    return Path(args.data_dir or os.environ.get("MNIST_DATA_DIR") or "data")


Output = tuple[object, str]  # (what --json prints, what a person reads)


def cmd_list(args) -> Output:
    client = api.connect(args.tracking_uri)
    require_model(client, args.model)
    events = history_module.reconciled(client, args.model)
    # search_model_versions does not fill in aliases in every store: take them from the model.
    held: dict[str, list[str]] = {}
    for alias, number in aliases(client, args.model).items():
        held.setdefault(number, []).append(alias)
    rows, payload = [], []
    for v in all_versions(client, args.model):
        accuracy = v.tags.get("test_accuracy")
        record = {
            "version": str(v.version),
            "aliases": sorted(held.get(str(v.version), [])),
            "stage": v.current_stage,
            "test_accuracy": float(accuracy) if accuracy else None,
            "created": render.timestamp_ms(v.creation_timestamp),
            "run_id": v.run_id,
            "status": v.status,
        }
        payload.append(record)
        rows.append(
            [
                f"v{v.version}",
                ",".join(record["aliases"]) or "-",
                v.current_stage,
                render.percent(record["test_accuracy"]),
                record["created"],
                v.run_id or "",
                v.status,
            ]
        )
    outside = [e for e in events if e.action == "outside"]
    notes = [
        f"note: {e.alias} moved outside the CLI from v{e.from_version or '-'} to v{e.to_version or '-'} "
        f"(first seen {e.time.replace('T', ' ')[:19]} UTC)"
        for e in outside[-3:]
    ]
    text = render.table(["version", "aliases", "stage", "test acc", "created (UTC)", "run id", "status"], rows)
    return (
        {"model": args.model, "versions": payload, "outside_moves": [e.__dict__ for e in outside]},
        "\n".join([text, *notes]),
    )


def cmd_evaluate(args) -> Output:
    data = load(args.data, _mnist_root(args), args.max_samples)
    baseline = None if args.baseline.lower() == "none" else args.baseline
    comparison = api.evaluate(args.model, args.candidate, baseline, data=data, tracking_uri=args.tracking_uri)
    return (comparison.to_dict(), render.comparison_report(comparison))


def _move_text(move: Move) -> str:
    stages = ", ".join(f"v{v} {old}->{new}" for v, old, new in move.stage_changes) or "unchanged"
    before = f"v{move.from_version}" if move.from_version else "nobody"
    after = f"v{move.to_version}" if move.to_version else "nobody"
    action = move.event.action + (", forced" if move.event.forced else "")
    return f"{move.alias}: {before} -> {after} ({action}); stages: {stages}"


def cmd_promote(args) -> Output:
    data = load(args.data, _mnist_root(args), args.max_samples)
    gate = Gate(tolerance=args.tolerance, min_accuracy=args.min_accuracy)
    try:
        move = api.promote(
            args.model,
            args.candidate,
            to=args.to,
            reason=args.reason,
            force=args.force,
            gate=gate,
            data=data,
            tracking_uri=args.tracking_uri,
        )
    except GateRefused as refused:
        refused.output = (
            {"refused": str(refused), "comparison": refused.comparison.to_dict()},
            render.comparison_report(refused.comparison),
        )
        raise
    figures = move.event.figures
    return (
        {"move": move.event.__dict__, "stage_changes": move.stage_changes},
        _move_text(move) + (f"\nevidence: {json.dumps(figures)}" if figures else ""),
    )


def cmd_rollback(args) -> Output:
    move = api.rollback(args.model, args.reason, alias=args.alias, tracking_uri=args.tracking_uri)
    return ({"move": move.event.__dict__, "stage_changes": move.stage_changes}, _move_text(move))


def cmd_history(args) -> Output:
    events = api.history(args.model, tracking_uri=args.tracking_uri)
    if args.alias:
        events = [e for e in events if e.alias == args.alias]
    return ([e.__dict__ for e in events], render.history_table(events) if events else "no history yet")


def parse_since(text: str | None) -> float:
    """Unix time from ISO 8601 or a duration ago (``30m``, ``2h``, ``1d``); 0 for everything."""
    if not text:
        return 0.0
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RegistryError(f"--since {text!r}: expected ISO 8601 (2026-11-25T10:00) or a duration like 30m") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def cmd_abtest(args) -> Output:
    client = api.connect(args.tracking_uri)
    current = aliases(client, args.model)
    if "challenger" not in current:
        raise RegistryError(f"{args.model} has no challenger: there is no A/B test to analyse")
    policy = Policy(alpha=args.alpha, tau=args.tau, min_feedback=args.min_feedback)
    report = analyse(args.log, current.get("champion"), current["challenger"], parse_since(args.since), policy=policy)
    text = render.ab_report(report)
    payload = {"report": report.to_dict()}
    if args.apply:
        gate = Gate(min_accuracy=args.min_accuracy)
        move = api.apply_ab_decision(args.model, report, gate=gate, tracking_uri=args.tracking_uri)
        if move is not None:
            text += "\napplied: " + _move_text(move)
            payload["move"] = move.event.__dict__
        else:
            text += "\nnothing to apply: keep testing"
    return payload, text


COMMANDS = {
    "abtest": cmd_abtest,
    "list": cmd_list,
    "evaluate": cmd_evaluate,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "history": cmd_history,
}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # A tracking server that is down should fail in seconds, not after minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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
