"""Online serving: ``mlflow models serve`` alone and through the gateway, under wrk.

The direct baseline is the very ``mlflow models serve`` process the gateway fronts (its URL is
read from ``/variants``), so "direct" and "through the gateway" differ only by the gateway.
"""

from __future__ import annotations

import httpx

from bench import processes
from bench.core import BenchError, Figure, Mode, ModelUnderTest, mnist_test, request_body
from bench.load import LoadResult, run_wrk

LOADS = (  # (name, images per request, connections)
    ("1 image/request, concurrency 1", 1, 1),
    ("1 image/request, concurrency 8", 1, 8),
    ("1 image/request, concurrency 32", 1, 32),
    ("64 images/request, concurrency 8", 64, 8),
)


def _figures(target: str, name: str, images: int, result: LoadResult) -> list[Figure]:
    if result.errors:
        raise BenchError(f"{target}, {name}: {result.errors} requests failed under load")
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
    }
    return [
        Figure("online", f"{target}: {name}", result.rps, "requests/s", detail),
        Figure("online", f"{target}: {name} (images)", result.rps * images, "images/s", detail),
    ]


def load_series(mode: Mode, target: str, url: str, bodies: dict[int, bytes]) -> list[Figure]:
    figures = []
    for name, images, connections in LOADS:
        result = run_wrk(url, bodies[images], connections, mode.seconds(10.0, 2.0))
        figures += _figures(target, name, images, result)
    return figures


def bodies() -> dict[int, bytes]:
    images, _ = mnist_test(64)
    return {1: request_body(images[:1]), 64: request_body(images[:64])}


def backend_url(gateway_url: str) -> str:
    variants = httpx.get(f"{gateway_url}/variants", timeout=10).json()["variants"]
    return variants[0]["backend"]


def measure(mode: Mode, model: ModelUnderTest, extra_gateways: dict[str, list[str]] | None = None) -> list[Figure]:
    """Plain gateway and its stock backend; then each extra gateway configuration given."""
    requests = bodies()
    figures: list[Figure] = []
    plain = processes.gateway(model.tracking_uri, model.directory, "--backend_mode", "mlflow")
    with processes.running(plain, "/ready"):
        direct = backend_url(plain.url)
        figures += load_series(mode, "mlflow models serve", direct, requests)
        figures += load_series(mode, "gateway (proxy) -> mlflow models serve", plain.url, requests)
        figures.append(
            Figure(
                "memory",
                "gateway + its mlflow models serve backend, peak RSS",
                plain.peak_rss_mib(),
                "MiB",
                {"note": "sum of VmHWM over the gateway's process group"},
            )
        )
    for target, arguments in (extra_gateways or {}).items():
        server = processes.gateway(model.tracking_uri, model.directory, *arguments)
        with processes.running(server, "/ready"):
            figures += load_series(mode, target, server.url, requests)
            figures.append(Figure("memory", f"{target}, gateway peak RSS", server.peak_rss_mib(), "MiB"))
    return figures
