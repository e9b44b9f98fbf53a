"""Online serving: ``mlflow models serve`` alone and through the gateway, under wrk.

The proxy's direct baseline is the very ``mlflow models serve`` process the gateway fronts (given
to it with ``--backend champion=URL``), so "direct" and "through the gateway" differ only by the
gateway. A gateway that starts its own backends keeps them on private unix sockets, out of wrk's
reach; its direct baseline is a backend of the same kind and workers on TCP beside it. The two
loads the gateway's targets are about (concurrency 1 and 32, single images) are measured in
alternating rounds: on a shared two-core machine, drift between two runs minutes apart is larger
than what is being measured (one full run put the same proxy at 0.81x and the next at 1.08x of
direct when each side ran once). At concurrency 1 the gateway's added latency is the median of
the per-round differences.
"""

from __future__ import annotations

import statistics

from bench import processes
from bench.core import BenchError, Figure, Mode, ModelUnderTest, mnist_test, request_body
from bench.load import LoadResult, run_wrk, run_wrk_answered
from bench.paired import paired_requests

SINGLE_1, SINGLE_8, SINGLE_32, BATCH_8 = (
    "1 image/request, concurrency 1",
    "1 image/request, concurrency 8",
    "1 image/request, concurrency 32",
    "64 images/request, concurrency 8",
)
LOADS = ((SINGLE_8, 1, 8), (SINGLE_32, 1, 32), (BATCH_8, 64, 8))  # (name, images per request, connections)
DIRECT = "mlflow models serve"
# The gateway tuned for throughput: adaptive micro-batching over backends forked from the warm pool.
OPTIMISED = "gateway (micro-batching) -> warm backend"
OPTIMISED_ARGS = ["--backend_mode", "warm", "--batch_max_size", "64"]
PAIRED = f"added median latency, {SINGLE_1}, paired requests"
# The backends' server: MLflow's invocations in a bare ASGI app (serve.scoring_app), not its FastAPI app.
BARE_APP = "serve.backend (MLflow's invocations in a bare ASGI app)"


def _figures(target: str, name: str, images: int, result: LoadResult, extra: dict | None = None) -> list[Figure]:
    if result.errors:
        raise BenchError(f"{target}, {name}: {result.errors} requests failed under load")
    if not result.requests:
        raise BenchError(f"{target}, {name}: no request was answered in {result.seconds:.0f} s of load")
    detail = {
        "target": target,
        "load": name,
        "requests": result.requests,
        "seconds": round(result.seconds, 2),
        "p50_ms": round(result.p50_ms, 2),
        "p90_ms": round(result.p90_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "errors": result.errors,
        "images_per_request": images,
    } | (extra or {})
    return [
        Figure("online", f"{target}: {name}", result.rps, "requests/s", detail),
        Figure("online", f"{target}: {name} (images)", result.rps * images, "images/s", detail),
    ]


def _combine(results: list[LoadResult]) -> LoadResult:
    """Rounds of one target as one result: summed counts, median of the round percentiles."""
    return LoadResult(
        requests=sum(r.requests for r in results),
        seconds=sum(r.seconds for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p90_ms=statistics.median(r.p90_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
    )


def alternate(
    direct_url: str, url: str, body: bytes, connections: int, rounds: int, seconds: float
) -> tuple[list[LoadResult], list[LoadResult]]:
    """The same load on ``direct_url`` and ``url``, one round each in turn."""
    direct, through = [], []
    for _ in range(rounds):
        direct.append(run_wrk(direct_url, body, connections, seconds))
        through.append(run_wrk(url, body, connections, seconds))
    return direct, through


def alternating_c1(mode: Mode, target: str, url: str, direct_url: str, body: bytes, direct_name: str) -> list[Figure]:
    """Concurrency 1, direct (``direct_name`` at ``direct_url``) and through ``url`` in alternating
    wrk rounds; the added median from those rounds and from paired requests (``bench.paired``)."""
    rounds = mode.count(8, 2)
    direct, through = alternate(direct_url, url, body, 1, rounds, mode.seconds(2.0, 1.0))
    added = statistics.median(t.p50_ms - d.p50_ms for d, t in zip(direct, through, strict=True))
    detail = {
        "rounds": rounds,
        "round_differences_ms": [round(t.p50_ms - d.p50_ms, 2) for d, t in zip(direct, through, strict=True)],
    }
    paired = paired_requests(direct_url, url, body, mode.count(3000, 200))
    paired_detail = {
        "pairs": paired.pairs,
        "direct_p50_ms": round(paired.direct_p50_ms, 3),
        "through_p50_ms": round(paired.through_p50_ms, 3),
        "added_by_fifth_ms": paired.block_added_ms,
        "client": "python http.client, one request each way in turn",
    }
    return (
        _figures(f"{direct_name}, direct (alternating with {target})", SINGLE_1, 1, _combine(direct))
        + _figures(target, SINGLE_1, 1, _combine(through))
        + [
            Figure("online", f"{target}: added median latency, {SINGLE_1}", added, "ms", detail),
            Figure("online", f"{target}: {PAIRED}", paired.added_median_ms, "ms", paired_detail),
        ]
    )


def load_series(mode: Mode, target: str, url: str, bodies: dict[int, bytes], skip: tuple = ()) -> list[Figure]:
    figures = []
    for name, images, connections in LOADS:
        if name not in skip:
            result = run_wrk_answered(url, bodies[images], connections, mode.seconds(10.0, 1.0))
            figures += _figures(target, name, images, result)
    return figures


def bodies() -> dict[int, bytes]:
    images, _ = mnist_test(64)
    return {1: request_body(images[:1]), 64: request_body(images[:64])}


def direct_reference(model: ModelUnderTest, arguments: list[str]) -> processes.Server:
    """A backend of the kind the gateway configured by ``arguments`` starts, on a TCP port."""
    workers = int(arguments[arguments.index("--backend_workers") + 1]) if "--backend_workers" in arguments else 1
    return processes.fast_backend(model.model_uri, model.tracking_uri, model.directory, workers)


def measure(mode: Mode, model: ModelUnderTest, extra_gateways: dict[str, list[str]] | None = None) -> list[Figure]:
    """The plain gateway and its stock backend; then each extra gateway configuration given."""
    requests = bodies()
    figures: list[Figure] = []
    proxy = "gateway (proxy) -> mlflow models serve"
    stock = processes.mlflow_serve(model.model_uri, model.tracking_uri, model.directory)
    with processes.running(stock, "/ping"):
        plain = processes.gateway(
            model.tracking_uri, model.directory, "--backend", f"champion={stock.url}", "--batch_max_size", "1"
        )
        with processes.running(plain, "/ready"):
            figures += _proxy_figures(mode, stock, plain, requests, proxy)
        figures += bare_app_figures(mode, model, stock, requests)
    for target, arguments in (extra_gateways or {}).items():
        reference = direct_reference(model, arguments)
        server = processes.gateway(model.tracking_uri, model.directory, *arguments)
        with processes.running(reference, "/ping"), processes.running(server, "/ready"):
            figures += alternating_c1(mode, target, server.url, reference.url, requests[1], "its backend")
            figures += load_series(mode, target, server.url, requests)
            figures.append(Figure("memory", f"{target}: gateway and backend, peak RSS", server.peak_rss_mib(), "MiB"))
    return figures


def bare_app_figures(
    mode: Mode, model: ModelUnderTest, stock: processes.Server, requests: dict[int, bytes]
) -> list[Figure]:
    """What the backends' bare app buys over MLflow's own (``mlflow models serve``): the same model
    in one uvicorn process each, the same loads on each in alternating rounds."""
    ours = processes.fast_backend(model.model_uri, model.tracking_uri, model.directory)
    figures: list[Figure] = []
    with processes.running(ours, "/ping"):
        for name, connections in ((SINGLE_1, 1), (SINGLE_32, 32)):
            rounds = mode.count(4, 1)
            theirs, mine = alternate(stock.url, ours.url, requests[1], connections, rounds, mode.seconds(4.0, 1.0))
            detail = {"rounds": rounds, "alternating": True}
            figures += _figures(f"{DIRECT}, direct (alternating with {BARE_APP})", name, 1, _combine(theirs), detail)
            figures += _figures(BARE_APP, name, 1, _combine(mine), detail)
    return figures


def _proxy_figures(
    mode: Mode, stock: processes.Server, plain: processes.Server, requests: dict[int, bytes], proxy: str
) -> list[Figure]:
    """The stock server alone and through the plain gateway in front of it."""
    figures = load_series(mode, DIRECT, stock.url, requests, skip=(SINGLE_32,))
    rounds = alternate(stock.url, plain.url, requests[1], 32, mode.count(4, 1), mode.seconds(5.0, 1.0))
    for name, results in zip((DIRECT, proxy), rounds, strict=True):
        figures += _figures(name, SINGLE_32, 1, _combine(results), {"rounds": len(results), "alternating": True})
    figures += alternating_c1(mode, proxy, plain.url, stock.url, requests[1], DIRECT)
    figures += load_series(mode, proxy, plain.url, requests, skip=(SINGLE_32,))
    figures.append(
        Figure(
            "memory",
            "gateway + its mlflow models serve backend, peak RSS",
            plain.peak_rss_mib() + stock.peak_rss_mib(),
            "MiB",
            {"note": "sum of VmHWM over the gateway and the mlflow models serve process tree"},
        )
    )
    return figures
