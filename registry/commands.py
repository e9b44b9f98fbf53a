"""What each ``mnist-registry`` subcommand does, given its parsed options: (the payload ``--json``
prints, the text a person reads). Imported by the command line once the options parse."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mnist_mlops.common.times import parse_moment
from mnist_mlops.registry import api, render
from mnist_mlops.registry import history as history_module
from mnist_mlops.registry.abtest import Policy, analyse
from mnist_mlops.registry.datasets import load
from mnist_mlops.registry.errors import RegistryError
from mnist_mlops.registry.promote import Gate, GateRefused, Move
from mnist_mlops.registry.versions import aliases, all_versions, require_model


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
    require_model(api.connect(args.tracking_uri), args.model)  # the model first: it is the likelier miss
    data = load(args.data, _mnist_root(args), args.max_samples)
    baseline = None if args.baseline.lower() == "none" else args.baseline
    comparison = api.evaluate(args.model, args.candidate, baseline, data=data, tracking_uri=args.tracking_uri)
    payload, text = comparison.to_dict(), render.comparison_report(comparison)
    if args.sets:
        versions = [args.candidate] + ([baseline] if baseline else [])
        scores = api.evaluate_sets(args.model, versions, _mnist_root(args), args.set_samples, args.tracking_uri)
        payload["sets"] = {version: [s.to_dict() for s in figures] for version, figures in scores.items()}
        text += "\n\n" + render.sets_report(scores)
    return payload, text


def _move_text(move: Move) -> str:
    stages = ", ".join(f"v{v} {old}->{new}" for v, old, new in move.stage_changes) or "unchanged"
    before = f"v{move.from_version}" if move.from_version else "nobody"
    after = f"v{move.to_version}" if move.to_version else "nobody"
    action = move.event.action + (", forced" if move.event.forced else "")
    return f"{move.alias}: {before} -> {after} ({action}); stages: {stages}"


def cmd_promote(args) -> Output:
    client = api.connect(args.tracking_uri)
    require_model(client, args.model)  # the model first: it is the likelier miss, and the data is slow to read
    api.resolve(args.model, args.candidate, args.tracking_uri)
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
    try:
        return parse_moment(text, "--since")
    except ValueError as exc:
        raise RegistryError(str(exc)) from None


def cmd_abtest(args) -> Output:
    client = api.connect(args.tracking_uri)
    current = aliases(client, args.model)
    if "challenger" not in current:
        raise RegistryError(f"{args.model} has no challenger: there is no A/B test to analyse")
    policy = Policy(
        alpha=args.alpha, tau=args.tau, min_feedback=args.min_feedback, max_feedback_share=args.max_feedback_share
    )
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
