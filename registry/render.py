"""Plain-text rendering of registry data for people (the ``--json`` forms are for scripts)."""

from __future__ import annotations

from datetime import UTC, datetime

from mnist_mlops.registry.evaluate import Comparison
from mnist_mlops.registry.history import Event


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def timestamp_ms(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def percent(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{100 * value:.{digits}f}%"


def _evidence(event: Event) -> str:
    figures = event.figures or {}
    candidate, baseline = figures.get("candidate"), figures.get("baseline")
    parts = []
    if candidate:
        parts.append(f"v{candidate['version']} {percent(candidate['accuracy'])}")
    if baseline:
        parts.append(f"vs v{baseline['version']} {percent(baseline['accuracy'])}")
    if "decision" in figures:
        parts.append(str(figures["decision"]))
    if figures.get("count"):
        parts.append(f"n={figures['count']}")
    return " ".join(parts)


def history_table(events: list[Event]) -> str:
    rows = [
        [
            e.time.replace("T", " ")[:19],
            e.actor,
            e.action + (" (forced)" if e.forced else ""),
            e.alias,
            f"v{e.from_version}" if e.from_version else "-",
            f"v{e.to_version}" if e.to_version else "-",
            e.reason,
            _evidence(e),
        ]
        for e in events
    ]
    return table(["time (UTC)", "actor", "action", "alias", "from", "to", "reason", "evidence"], rows)


def comparison_report(c: Comparison) -> str:
    lines = [f"evaluation on {c.data} ({c.count} images)"]
    scores = [c.candidate] + ([c.baseline] if c.baseline else [])
    rows = [
        [
            f"v{s.version}",
            percent(s.accuracy),
            f"[{percent(s.interval[0])}, {percent(s.interval[1])}]",
            s.failed_rows,
        ]
        for s in scores
    ]
    lines.append(table(["version", "accuracy", "95% interval", "failed rows"], rows))
    recall_rows = [[d] + [percent(s.recall[d], 1) for s in scores] for d in range(10)]
    lines.append("")
    lines.append(table(["digit"] + [f"recall v{s.version}" for s in scores], recall_rows))
    if c.baseline is not None:
        lines.append("")
        lines.append(
            f"difference v{c.candidate.version} - v{c.baseline.version}: {100 * c.difference:+.2f} points "
            f"(95% interval {100 * c.difference_interval[0]:+.2f} to {100 * c.difference_interval[1]:+.2f})"
        )
        lines.append(
            f"they disagree on {c.disagreements} images: only v{c.candidate.version} right on "
            f"{c.candidate_only_right}, only v{c.baseline.version} right on {c.baseline_only_right} "
            f"(McNemar exact p = {c.mcnemar_p:.3g})"
        )
    if c.evaluation_run_id:
        lines.append(f"logged to MLflow: evaluation run {c.evaluation_run_id}")
    return "\n".join(lines)


def ab_report(report) -> str:
    """The A/B analysis as a table per variant, then the decision and why."""
    arms = [report.champion, report.challenger]
    rows = []
    for arm in arms:
        ci = arm.ci95
        rows.append(
            [
                f"{arm.variant}{' (shadow)' if arm.role == 'shadow' else ''}",
                f"v{arm.version}" if arm.version else "-",
                arm.requests,
                percent(arm.error_rate, 1),
                "" if arm.p50_ms is None else f"{arm.p50_ms:.1f}",
                "" if arm.p99_ms is None else f"{arm.p99_ms:.1f}",
                "" if arm.mean_confidence is None else f"{arm.mean_confidence:.3f}",
                "" if arm.uncertain is None else percent(arm.uncertain, 1),
                arm.feedback,
                "" if arm.accuracy is None else f"{percent(arm.accuracy)} [{percent(ci[0])}, {percent(ci[1])}]",
            ]
        )
    lines = [
        table(
            [
                "variant",
                "version",
                "requests",
                "errors",
                "p50 ms",
                "p99 ms",
                "mean conf",
                "uncertain",
                "feedback",
                "accuracy [95% CI]",
            ],
            rows,
        )
    ]
    if report.agreement is not None:
        lines.append(
            f"agreement with the champion on shadowed requests: {percent(report.agreement)} of {report.agreement_pairs}"
        )
    lines.append(f"test: {report.test}")
    lines.append(f"decision: {report.decision.upper()} - " + "; ".join(report.reasons))
    return "\n".join(lines)


def sets_report(scores: dict[str, list]) -> str:
    """Versions side by side on the evaluation sets: accuracy (and refusals) per set."""
    names = [s.name for s in next(iter(scores.values()))]
    rows = []
    for index, name in enumerate(names):
        row = [name]
        for figures in scores.values():
            s = figures[index]
            ece = "" if s.ece is None else f", ECE {s.ece:.3f}"
            row.append(f"{percent(s.accuracy)} ({percent(s.refused, 1)} refused{ece})")
        rows.append(row)
    return "evaluation sets (seed of record)\n" + table(["set", *scores], rows)
