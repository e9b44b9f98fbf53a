"""Ratios from the figures of one run, the printed table, and the result files."""

from __future__ import annotations

import json
from pathlib import Path

from bench import batch
from bench.core import Figure, ratio
from bench.online import BARE_APP
from bench.serverless import STEP_CLIENTS


def find(figures: list[Figure], section: str, name: str, unit: str | None = None) -> Figure | None:
    """The figure of ``section`` named ``name`` (and of ``unit``, if given), or None."""
    for figure in figures:
        if figure.section == section and figure.name == name and (unit is None or figure.unit == unit):
            return figure
    return None


def ratios(
    figures: list[Figure], optimised_target: str | None = None, variants: dict[str, str] | None = None
) -> list[Figure]:
    """Every derived figure. ``variants`` maps a configuration of the optimised gateway (its target
    name) to the name of its ratio against the optimised gateway itself."""
    network = [f for f in figures if f.section == "network"]
    best = max(network, key=lambda f: f.value) if network else None
    batch1 = find(figures, "network", "bare network, batch 1")
    direct, proxy = "mlflow models serve", "gateway (proxy) -> mlflow models serve"
    single32, single1, batch64 = (
        "1 image/request, concurrency 32",
        "1 image/request, concurrency 1",
        "64 images/request, concurrency 8",
    )
    out = [
        ratio(
            "training: tracked / untracked images/s",
            find(figures, "training", next((f.name for f in figures if "tracking on" in f.name), "")),
            find(figures, "training", next((f.name for f in figures if "tracking off" in f.name), "")),
        ),
        ratio(
            "pyfunc pixels (batch 64) / bare network best",
            find(figures, "pyfunc", "pyfunc in-process, pixels"),
            best,
        ),
        ratio(
            "pyfunc PNG (batch 64) / bare network best",
            find(figures, "pyfunc", "pyfunc in-process, png"),
            best,
        ),
        ratio(
            "pyfunc PNG one per call / bare network batch 1",
            find(figures, "pyfunc", "pyfunc in-process, png, one per call"),
            batch1,
        ),
        ratio(
            "gateway / direct requests/s, 1 image, concurrency 32",
            find(figures, "online", f"{proxy}: {single32}"),
            find(figures, "online", f"{direct}: {single32}"),
        ),
        ratio(
            "served / in-process images/s, 1 image/request (concurrency 32 vs one per call)",
            find(figures, "online", f"{direct}: {single32} (images)"),
            find(figures, "pyfunc", "pyfunc in-process, png, one per call"),
        ),
        ratio(
            "served / in-process images/s, 64 images/request",
            find(figures, "online", f"{direct}: {batch64} (images)"),
            find(figures, "pyfunc", "pyfunc in-process, png"),
        ),
    ]
    for load in (single1, single32):
        out.append(
            ratio(
                f"backend: {BARE_APP} / {direct} (MLflow's FastAPI app), direct, {load}",
                find(figures, "online", f"{BARE_APP}: {load}"),
                find(figures, "online", f"{direct}, direct (alternating with {BARE_APP}): {load}"),
            )
        )
    paired = f"added median latency, {single1}, paired requests"
    out.append(find(figures, "online", f"{proxy}: added median latency, {single1}"))
    out.append(find(figures, "online", f"{proxy}: {paired}"))
    if optimised_target:
        out.append(
            ratio(
                f"{optimised_target} / stock mlflow models serve requests/s, 1 image, concurrency 32",
                find(figures, "online", f"{optimised_target}: {single32}"),
                find(figures, "online", f"{direct}: {single32}"),
            )
        )
        out.append(find(figures, "online", f"{optimised_target}: added median latency, {single1}"))
        out.append(find(figures, "online", f"{optimised_target}: {paired}"))
    for variant, name in (variants or {}).items():
        for load in (single32, f"{batch64} (images)"):
            out.append(
                ratio(
                    f"{name}, {load}",
                    find(figures, "online", f"{variant}: {load}"),
                    find(figures, "online", f"{optimised_target}: {load}"),
                )
            )
    cold = {f.name.split(":")[0]: f for f in figures if f.section == "cold start"}
    stock = cold.get("mlflow models serve")
    for name in (
        "mnist_mlops.serve.backend (MLflow's scoring app, fresh interpreter)",
        "warm pool fork (serve.warm_pool)",
    ):
        out.append(ratio(f"cold start: {name} / mlflow models serve", cold.get(name), stock))
    out += batch.ratios(figures)
    stock_launch = find(figures, "serverless", "stock mlflow models serve: launch to first correct answer")
    always_on = find(figures, "serverless", "idle A/B gateway, always on: memory")
    out += [
        ratio(
            "serverless: request at zero replicas p99 / stock launch to first answer",
            find(figures, "serverless", "request at zero replicas, warm pool up: p99"),
            stock_launch,
        ),
        ratio(
            "serverless: the very first request / stock launch to first answer",
            find(figures, "serverless", "the very first request (the warm pool starts too)"),
            stock_launch,
        ),
        ratio(
            "serverless: idle memory at zero, before any request / always on",
            find(figures, "serverless", "idle A/B gateway at zero, before any request: memory"),
            always_on,
        ),
        ratio(
            f"serverless: step load c{STEP_CLIENTS} requests/s, at zero when idle / fixed replicas",
            find(figures, "serverless", f"step load c{STEP_CLIENTS}, at zero when idle: requests/s"),
            find(figures, "serverless", f"step load c{STEP_CLIENTS}, fixed replicas: requests/s"),
        ),
        ratio(
            "serverless: alias moved to served p50, webhook / polling every 5 s",
            find(figures, "serverless", "alias moved to new version serving, webhook: p50"),
            find(figures, "serverless", "alias moved to new version serving, polling: p50"),
        ),
        ratio(
            "serverless: idle memory at zero, before any request / always on, mlflow backends",
            find(figures, "serverless", "idle A/B gateway at zero, before any request: memory"),
            find(figures, "serverless", "idle A/B gateway, always on, mlflow backends: memory"),
        ),
        ratio(
            "serverless: idle memory at zero, after waking / always on",
            find(figures, "serverless", "idle A/B gateway at zero, after its variants slept again: memory"),
            always_on,
        ),
    ]
    for writers in ("1 writer", "2 writers"):
        out.append(
            ratio(
                f"inference log PostgreSQL / SQLite rows written/s, {writers}",
                find(figures, "inference log", f"PostgreSQL: rows written/s, {writers}"),
                find(figures, "inference log", f"SQLite: rows written/s, {writers}"),
            )
        )
    return [
        f if f.section == "ratios" else Figure("ratios", f.name, f.value, f.unit, f.detail)
        for f in out
        if f is not None
    ]


def _value(figure: Figure) -> str:
    if figure.unit in ("images/s", "requests/s", "rows/s"):
        return f"{figure.value:,.0f} {figure.unit}"
    if figure.unit == "x":
        return f"{figure.value:.2f}x"
    if figure.unit == "fraction":
        return f"{100 * figure.value:.2f}%"
    return f"{figure.value:,.2f} {figure.unit}"


def _latency(figure: Figure) -> str:
    d = figure.detail
    return f"p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms, errors {d['errors']}" if "p50_ms" in d else ""


def markdown(machine: dict, mode: str, figures: list[Figure], derived: list[Figure], command: str) -> str:
    lines = [
        f"# Benchmark results ({mode} mode)",
        "",
        f"Command: `{command}`  ",
        f"Measured {machine['time']} on {machine['cpu']} "
        f"({machine['cores']} cores, {machine['memory_gib']} GiB), "
        f"torch {machine['versions']['torch']} with {machine['torch_threads']} threads"
        f" in {machine.get('torch_dtype', 'float32')}, "
        f"mlflow {machine['versions']['mlflow']}, commit {machine['git_commit']}.",
        "",
        "| section | measurement | value | notes |",
        "| --- | --- | --- | --- |",
    ]
    for figure in figures + derived:
        if figure.unit == "images/s" and figure.section == "online" and "(images)" not in figure.name:
            continue
        lines.append(f"| {figure.section} | {figure.name} | {_value(figure)} | {_latency(figure)} |")
    return "\n".join(lines + _configurations(figures)) + "\n"


def _configurations(figures: list[Figure]) -> list[str]:
    """Each measured system's configuration and tuning knobs (figures whose detail has a
    ``tuning``), once per system."""
    tunings = {f.name.rsplit(": ", 1)[0]: f.detail["tuning"] for f in figures if "tuning" in f.detail}
    if not tunings:
        return []
    lines = ["", "## Configurations", "", "| system | configuration |", "| --- | --- |"]
    for system, tuning in tunings.items():
        knobs = "; ".join(
            f"{key}: {' '.join(map(str, value)) if isinstance(value, list) else value}" for key, value in tuning.items()
        )
        lines.append(f"| {system} | {knobs} |")
    return lines


def write(
    directory: Path, machine: dict, mode: str, figures: list[Figure], derived: list[Figure], command: str
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "mode": mode,
        "command": command,
        "machine": machine,
        "figures": [f.to_dict() for f in figures],
        "ratios": [f.to_dict() for f in derived],
    }
    (directory / f"{mode}.json").write_text(json.dumps(payload, indent=2) + "\n")
    path = directory / f"{mode}.md"
    path.write_text(markdown(machine, mode, figures, derived, command))
    return path


def table(figures: list[Figure]) -> str:
    width = max((len(f.name) for f in figures), default=10)
    return "\n".join(f"{f.section:10s}  {f.name:{width}s}  {_value(f):>22s}  {_latency(f)}" for f in figures)
