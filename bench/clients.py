"""The gateway's backend HTTP client against httpx, on the same backend, in the same run.

The gateway calls its backends with a small client of its own (``backend_http.BackendClient``,
httptools' parser under a connection pool). This measures what it buys over the well-kept library
it would otherwise use, ``httpx.AsyncClient``: the client's CPU per request (the gateway's budget
is a fraction of a millisecond per request) at concurrency 1, and requests/s at concurrency 32,
the two interleaved round by round against one real backend (MLflow's scoring app).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx

from bench import processes
from bench.core import Figure, Mode, ModelUnderTest, mnist_test, ratio, request_body
from mnist_mlops.serve.gateway.backend_http import BackendClient

HEADERS = {"Content-Type": "application/json"}


class _Ours:
    name = "gateway's client (httptools)"

    def __init__(self) -> None:
        self.client = BackendClient()

    async def post(self, url: str, body: bytes) -> int:
        status, _, _ = await self.client.post(url, "/invocations", body, HEADERS, 30.0)
        return status

    async def close(self) -> None:
        await self.client.close()


class _Httpx:
    name = "httpx.AsyncClient"

    def __init__(self) -> None:
        self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))

    async def post(self, url: str, body: bytes) -> int:
        return (await self.client.post(f"{url}/invocations", content=body, headers=HEADERS, timeout=30.0)).status_code

    async def close(self) -> None:
        await self.client.aclose()


async def _sequential(client, url: str, body: bytes, seconds: float) -> tuple[float, float]:
    """(client CPU ms per request, median latency ms) of one request at a time."""
    latencies, cpu_started = [], time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        assert await client.post(url, body) == 200
        latencies.append((time.perf_counter() - started) * 1000)
    return (time.process_time() - cpu_started) * 1000 / len(latencies), statistics.median(latencies)


async def _concurrent(client, url: str, body: bytes, seconds: float, connections: int = 32) -> float:
    """Requests/s with ``connections`` requests in flight."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            assert await client.post(url, body) == 200
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return done / (time.perf_counter() - started)


async def _rounds(url: str, body: bytes, rounds: int, seconds: float) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    clients = [_Ours(), _Httpx()]
    try:
        for client in clients:  # warm both: connections open, code paths hot
            await _sequential(client, url, body, 0.5)
        for _ in range(rounds):
            for client in clients:
                cpu, p50 = await _sequential(client, url, body, seconds)
                rps = await _concurrent(client, url, body, seconds)
                figures = results.setdefault(client.name, {"cpu_ms": [], "median_ms": [], "rps": []})
                figures["cpu_ms"].append(cpu)
                figures["median_ms"].append(p50)
                figures["rps"].append(rps)
    finally:
        for client in clients:
            await client.close()
    return results


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    body = request_body(mnist_test(1)[0])
    backend = processes.fast_backend(model.model_uri, model.tracking_uri, model.directory)
    with processes.running(backend, "/ping"):
        results = asyncio.run(_rounds(backend.url, body, mode.count(5, 1), mode.seconds(3.0, 0.5)))
    figures = []
    for name, values in results.items():
        detail = {key: [round(v, 3) for v in series] for key, series in values.items()}
        figures += [
            Figure(
                "clients",
                f"{name}: client CPU per request, concurrency 1",
                statistics.median(values["cpu_ms"]),
                "ms",
                detail,
            ),
            Figure(
                "clients",
                f"{name}: median latency, concurrency 1",
                statistics.median(values["median_ms"]),
                "ms",
                detail,
            ),
            Figure(
                "clients", f"{name}: requests/s, concurrency 32", statistics.median(values["rps"]), "requests/s", detail
            ),
        ]
    ours, theirs = figures[:3], figures[3:]
    derived = [
        ratio("backend client CPU per request: httpx / the gateway's own", theirs[0], ours[0]),
        ratio("backend client requests/s at concurrency 32: the gateway's own / httpx", ours[2], theirs[2]),
    ]
    return figures + [f for f in derived if f is not None]
