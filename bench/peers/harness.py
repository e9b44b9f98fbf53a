"""The gateway against the serving frameworks a user would pick instead (``make bench ONLY=peers``;
the quick mode leaves the peers out).

Every system serves the same pyfunc (the benchmark's registered model, its own preprocessing) and
gets the same images under the same ``wrk`` loads. A round launches each system in turn, times its
launch to the first correct answer, checks that it answers 64 images as the in-process pyfunc
does, runs the loads (concurrency 1, concurrency 32 with the CPU its process tree used, concurrency
1 right after it, and 64 images per request at concurrency 8), reads the peak memory of its whole
process tree, and stops it; rounds interleave the systems and every figure is the median over the
rounds. BentoML runs from a virtualenv of its own (``environments``); Ray Serve from ours.
"""

from __future__ import annotations

import base64
import functools
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import processes
from bench.coldstart import first_correct_answer
from bench.core import BenchError, Figure, Mode, ModelUnderTest, answer_rows, mnist_test, png, ratio, request_body
from bench.load import LoadResult, run_wrk
from bench.online import OPTIMISED_ARGS
from bench.peers import environments
from bench.report import find
from tests.helpers import tree_pss_mib

SECTION = "peers"
HERE = Path(__file__).parent
C1, C32, C1_AFTER, IMAGES_64 = (
    "1 image/request, concurrency 1",
    "1 image/request, concurrency 32",
    "1 image/request, concurrency 1 right after concurrency 32",
    "64 images/request, concurrency 8",
)
LAUNCH, CPU = "launch to first correct answer", "CPU per request at concurrency 32"
MEMORY = "peak RSS of the process tree"  # summed VmHWM: a page shared by forks counts in each
PSS = "memory of the process tree after the loads (PSS)"  # a shared page counts once

# Rounds in full mode. One system's 8-second loads here vary up to twofold from round to round
# (the same gateway's c1: 164 to 402 requests/s in one run): a median of five moves only when
# three rounds are off, where a median of three moved with two.
ROUNDS = 5
GATEWAY = "gateway (micro-batching, 1 backend)"
GATEWAY_2 = "gateway (micro-batching, 2 backends)"
GATEWAY_SERVERLESS = "gateway (serverless: 0 to 2 backends)"
RAY = "Ray Serve 2.60"
BENTOML = "BentoML 1.4.40"
GATEWAYS = {  # arguments after the micro-batching ones (``bench.online.OPTIMISED_ARGS``)
    GATEWAY: [],
    GATEWAY_2: ["--min_replicas", "2", "--max_replicas", "2"],
    GATEWAY_SERVERLESS: ["--min_replicas", "0", "--max_replicas", "2"],
}


@dataclass
class System:
    name: str
    tuning: dict
    server: Callable[[], processes.Server]
    body: Callable[[bytes], bytes] = lambda mlflow_body: mlflow_body
    runs: list[dict] = field(default_factory=list)


def bentoml_body(mlflow_body: bytes) -> bytes:
    """The same images as BentoML's API takes them: ``{"rows": [{"image": ...}, ...]}``."""
    split = json.loads(mlflow_body)["dataframe_split"]
    return json.dumps({"rows": [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]}).encode()


def _post(url: str, body: bytes, timeout: float = 10.0) -> list[dict]:
    answer = httpx.post(
        f"{url}/invocations", content=body, headers={"Content-Type": "application/json"}, timeout=timeout
    )
    answer.raise_for_status()
    return answer_rows(answer.json())


def _load(system: System, url: str, body: bytes, connections: int, seconds: float) -> LoadResult:
    result = run_wrk(url, system.body(body), connections, seconds)
    if result.errors:
        raise BenchError(f"{system.name}: {result.errors} of {result.requests} requests failed at c{connections}")
    return result


def one_round(system: System, mode: Mode, bodies: dict[int, bytes], label: int, expected: list[dict]) -> dict:
    """Launch ``system``, measure it, stop it: one round's figures."""
    server = system.server()
    seconds = mode.seconds(8.0, 1.0)
    try:
        alive = lambda: server.process.poll() is None  # noqa: E731
        launch = first_correct_answer(server.url, system.body(bodies[1]), label, alive, server.start())
        got = _post(server.url, system.body(bodies[64]), timeout=60)
        same = sum(
            a["label"] == b["label"] and abs(a["confidence"] - b["confidence"]) < 1e-4
            for a, b in zip(got, expected, strict=True)
        )
        if same != len(expected):
            raise BenchError(f"{system.name} answered {len(expected) - same} of {len(expected)} images otherwise")
        _load(system, server.url, bodies[1], 8, mode.seconds(2.0, 1.0))  # warm-up, not recorded
        c1 = _load(system, server.url, bodies[1], 1, seconds)
        cpu_before = server.cpu_seconds()
        c32 = _load(system, server.url, bodies[1], 32, seconds)
        cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / c32.requests
        c1_after = _load(system, server.url, bodies[1], 1, seconds / 2)
        batch = _load(system, server.url, bodies[64], 8, seconds)
        memory, pss = server.peak_rss_mib(), tree_pss_mib(server.process.pid)
    finally:
        server.stop()
    return {
        "launch": launch,
        C1: c1,
        C32: c32,
        C1_AFTER: c1_after,
        IMAGES_64: batch,
        "cpu_ms": cpu_ms,
        "mib": memory,
        "pss": pss,
    }


def _median(runs: list[dict], key: str, attribute: str | None = None) -> float:
    return statistics.median(getattr(run[key], attribute) if attribute else run[key] for run in runs)


def figures_of(system: System, section: str = SECTION) -> list[Figure]:
    runs, out = system.runs, []
    base = {"rounds": len(runs), "tuning": system.tuning}
    for load, images in ((C1, 1), (C32, 1), (C1_AFTER, 1), (IMAGES_64, 64)):
        detail = base | {
            "p50_ms": round(_median(runs, load, "p50_ms"), 2),
            "p99_ms": round(_median(runs, load, "p99_ms"), 2),
            "rounds_rps": [round(run[load].rps, 1) for run in runs],
            "images_per_request": images,
            "errors": sum(run[load].errors for run in runs),
        }
        unit, scale = ("images/s", images) if images > 1 else ("requests/s", 1)
        out.append(Figure(section, f"{system.name}: {load}", _median(runs, load, "rps") * scale, unit, detail))
    out.append(Figure(section, f"{system.name}: {LAUNCH}", _median(runs, "launch"), "s", base))
    out.append(Figure(section, f"{system.name}: {MEMORY}", _median(runs, "mib"), "MiB", base))
    out.append(Figure(section, f"{system.name}: {PSS}", _median(runs, "pss"), "MiB", base))
    out.append(Figure(section, f"{system.name}: {CPU}", _median(runs, "cpu_ms"), "ms", base))
    return out


def _find(figures: list[Figure], name: str) -> Figure:
    return find(figures, SECTION, name)


def p99_of(figure: Figure) -> Figure:
    """A run figure's p99 latency as a figure of its own, for a ratio of latencies."""
    return Figure(SECTION, f"{figure.name} p99", figure.detail["p99_ms"], "ms")


def peer_ratios(figures: list[Figure], gateways: list[str], peers: list[str]) -> list[Figure]:
    """Each gateway configuration against each peer, and against the best peer of each figure
    (the fastest, the leanest): the ratios the targets are stated in."""
    out = []
    for gateway in gateways:
        for peer in peers:
            for what in (C1, C32, C1_AFTER, IMAGES_64, LAUNCH, MEMORY, PSS, CPU):
                g, p = _find(figures, f"{gateway}: {what}"), _find(figures, f"{peer}: {what}")
                out.append(ratio(f"peers: {gateway} / {peer}, {what}", g, p))
            g, p = _find(figures, f"{gateway}: {C32}"), _find(figures, f"{peer}: {C32}")
            out.append(ratio(f"peers: {gateway} / {peer}, {C32} p99", p99_of(g), p99_of(p)))
        best = {
            what: max((_find(figures, f"{p}: {what}") for p in peers), key=lambda f: f.value)
            for what in (C1, C32, IMAGES_64)
        }
        for what, peer in best.items():
            out.append(ratio(f"peers: {gateway} / best peer, {what}", _find(figures, f"{gateway}: {what}"), peer))
        out.append(
            ratio(
                f"peers: {gateway} / best peer, {C32} p99",
                p99_of(_find(figures, f"{gateway}: {C32}")),
                p99_of(best[C32]),
            )
        )
        for memory in (MEMORY, PSS):
            leanest = min((_find(figures, f"{p}: {memory}") for p in peers), key=lambda f: f.value)
            out.append(
                ratio(f"peers: {gateway} / leanest peer, {memory}", _find(figures, f"{gateway}: {memory}"), leanest)
            )
    return [figure for figure in out if figure is not None]


def ray_serve(model: ModelUnderTest) -> processes.Server:
    """The Ray Serve peer (``ray_serve_app``) in our virtualenv: Ray 2.60 installs beside MLflow."""
    port = processes.free_port()
    command = [sys.executable, "-m", "bench.peers.ray_serve_app", "--model", str(model.local_path)]
    return processes.Server(
        RAY,
        [*command, "--port", str(port)],
        processes.environment(model.tracking_uri, PYTHONPATH=str(HERE.parent.parent)),
        f"http://127.0.0.1:{port}",
        model.directory / f"ray-serve-{port}.log",
    )


def bentoml(model: ModelUnderTest, python: Path) -> processes.Server:
    """The BentoML peer (``bentoml_service``), served by ``bentoml serve`` from its own virtualenv."""
    port = processes.free_port()
    command = [str(python), "-m", "bentoml", "serve", "bentoml_service:MnistPyfunc", "--working-dir", str(HERE)]
    env = processes.environment(model.tracking_uri, PEER_MODEL_PATH=str(model.local_path), BENTOML_DO_NOT_TRACK="True")
    env["PATH"] = f"{python.parent}:/usr/bin:/bin"
    return processes.Server(
        BENTOML,
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}",
        model.directory / f"bentoml-{port}.log",
    )


def systems(model: ModelUnderTest) -> list[System]:
    """The gateway's configurations, then the peers (BentoML's environment created if need be)."""
    python = environments.ensure("bentoml", environments.requirements(environments.BENTOML, model.local_path))
    found = []
    for name, extra in GATEWAYS.items():
        arguments = [*OPTIMISED_ARGS, *extra]
        server = functools.partial(processes.gateway, model.tracking_uri, model.directory, *arguments)
        found.append(System(name, {"arguments": arguments}, server))
    found.append(System(RAY, RAY_TUNING, functools.partial(ray_serve, model)))
    found.append(System(BENTOML, BENTOML_TUNING, functools.partial(bentoml, model, python), bentoml_body))
    return found


RAY_TUNING = {
    "deployment": "1 replica, num_cpus 1, max_ongoing_requests 64",
    "batching": "@serve.batch(max_batch_size=64 rows via batch_size_fn, batch_wait_timeout_s=0.002)",
    "ingress": "RAY_SERVE_THROUGHPUT_OPTIMIZED=1, RAY_SERVE_ENABLE_HA_PROXY=1",
    "torch_threads": 2,
}
BENTOML_TUNING = {
    "service": "1 worker, traffic timeout 60 s",
    "batching": "@bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=10000), rows as a list of objects",
    "torch_threads": 2,
}


def run_rounds(mode: Mode, model: ModelUnderTest, found: list[System], section: str = SECTION) -> list[Figure]:
    """``one_round`` of every system in turn, for each round (interleaved), and their figures: the
    requests are 1 and 64 MNIST test images, the answers to 64 checked against the in-process pyfunc."""
    import mlflow
    import pandas as pd

    images, labels = mnist_test(64)
    bodies = {1: request_body(images[:1]), 64: request_body(images)}
    frame = pd.DataFrame({"image": [base64.b64encode(png(image)).decode() for image in images]})
    expected = json.loads(mlflow.pyfunc.load_model(str(model.local_path)).predict(frame).to_json(orient="records"))
    for round_number in range(mode.count(ROUNDS, 1)):
        for system in found:
            print(f"bench: {section} round {round_number + 1}: {system.name} ...", file=sys.stderr, flush=True)
            system.runs.append(one_round(system, mode, bodies, int(labels[0]), expected))
    return [figure for system in found for figure in figures_of(system, section)]


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    found = systems(model)
    figures = run_rounds(mode, model, found)
    gateways = [s.name for s in found if s.name.startswith("gateway")]
    peers = [s.name for s in found if not s.name.startswith("gateway")]
    return figures + peer_ratios(figures, gateways, peers)


def against_in_process(figures: list[Figure]) -> list[Figure]:
    """Served single images at concurrency 32 against the in-process pyfunc's best batch (64 PNGs
    a call, ``bench.pyfunc``): what serving costs, for each gateway configuration and each peer."""
    best = next((f for f in figures if f.section == "pyfunc" and f.name == "pyfunc in-process, png"), None)
    served = [f for f in figures if f.section == SECTION and f.name.endswith(f": {C32}")]
    found = (
        ratio(f"peers: {f.name.removesuffix(f': {C32}')}, {C32} / in-process pyfunc, 64 PNGs a call", f, best)
        for f in served
    )
    return [figure for figure in found if figure is not None]
