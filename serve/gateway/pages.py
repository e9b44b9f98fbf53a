"""The gateway's web pages: ``/`` (draw or photograph a digit and watch the pipeline answer) and
``/ops`` (the variants, their traffic and the A/B test as it runs), and ``GET /ops/state``, the JSON
the operations page reads.

The pages are static files of this package (``web/``), read once at start-up and served from
memory by name: no path from a request ever reaches the file system. They carry no key and no
data; the browser asks for a key, keeps it for the tab (``sessionStorage``) and sends it with each
call, so every call is authenticated like any client's. The Content-Security-Policy lets a page
load and call only this gateway: no CDN, no inline script, no framing.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mnist_mlops.serve.gateway.errors import NotFound
from mnist_mlops.serve.gateway.requests import authenticate

WEB = Path(__file__).parent / "web"
PAGES = {"/": "try.html", "/ops": "ops.html"}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # a new gateway version's pages, not a stale copy
}
HISTORY_EVENTS = 20  # the latest promotions the operations page lists
HISTORY_MAX_AGE = 5.0  # seconds a read of the registry's history is reused


def load_assets(folder: Path = WEB) -> dict[str, tuple[bytes, str]]:
    """name -> (content, content type) of every servable file in ``folder``."""
    return {
        path.name: (path.read_bytes(), CONTENT_TYPES[path.suffix])
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


def variant_totals(registry) -> dict[str, dict]:
    """Cumulative traffic per variant from the gateway's Prometheus registry: requests, errors,
    latency count and sum, and the latency histogram's cumulative buckets ``[[le, count], ...]``.
    The page turns two snapshots into rates and windowed percentiles."""
    totals: dict[str, dict] = {}

    def entry(variant: str) -> dict:
        return totals.setdefault(
            variant, {"requests": 0.0, "errors": 0.0, "latency_count": 0.0, "latency_sum": 0.0, "buckets": {}}
        )

    for metric in registry.collect():
        for sample in metric.samples:
            variant = sample.labels.get("variant")
            if variant is None:
                continue
            if sample.name == "gateway_requests_total":
                entry(variant)["requests"] += sample.value
            elif sample.name == "gateway_request_errors_total":
                entry(variant)["errors"] += sample.value
            elif sample.name == "gateway_request_seconds_count":
                entry(variant)["latency_count"] += sample.value
            elif sample.name == "gateway_request_seconds_sum":
                entry(variant)["latency_sum"] += sample.value
            elif sample.name == "gateway_request_seconds_bucket":
                buckets = entry(variant)["buckets"]
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    for item in totals.values():
        item["buckets"] = [[None if math.isinf(b) else b, n] for b, n in sorted(item["buckets"].items())]
    return totals


@dataclass
class HistoryCache:
    """The promotion history from the registry, read at most every ``HISTORY_MAX_AGE`` seconds
    however many pages poll, off the event loop."""

    model: str
    tracking_uri: str
    events: list[dict] = field(default_factory=list)
    error: str | None = None
    _read_at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def latest(self) -> tuple[list[dict], str | None]:
        async with self._lock:
            if time.monotonic() - self._read_at >= HISTORY_MAX_AGE:
                try:
                    self.events, self.error = await asyncio.to_thread(self._read), None
                except Exception as exc:  # the registry is down or refuses: the page says so
                    self.error = f"the promotion history cannot be read: {str(exc).splitlines()[0][:200]}"
                self._read_at = time.monotonic()
        return self.events, self.error

    def _read(self) -> list[dict]:
        from mlflow import MlflowClient

        from mnist_mlops.registry import history

        events = history.read(MlflowClient(self.tracking_uri, self.tracking_uri), self.model)
        return [event.__dict__ for event in events[-HISTORY_EVENTS:]][::-1]


def add_page_routes(app: FastAPI, gateway) -> None:
    """``/``, ``/ops``, ``/static/<name>`` (open: they hold no data) and ``/ops/state`` (admin)."""
    assets = load_assets()
    settings = gateway.settings
    history = HistoryCache(settings.model_name, settings.tracking_uri)

    def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            raise NotFound(f"no page file named {name!r}")
        content, content_type = found
        return Response(content, media_type=content_type, headers=SECURITY_HEADERS)

    for path, name in PAGES.items():
        app.add_api_route(path, lambda name=name: asset(name), methods=["GET"], include_in_schema=False)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        return asset(name)

    @app.get("/ops/state")
    async def ops_state(request: Request) -> JSONResponse:
        authenticate(request, gateway.keys, "admin")
        report = gateway.autopilot.last_report if settings.auto_promote else await gateway.autopilot.current()
        events, history_error = await history.latest()
        return JSONResponse(
            {
                "time": time.time(),
                "model": settings.model_name,
                "variants": gateway.pool.table.describe(True),
                "split": gateway.pool.weights(),
                "backend_workers": settings.backend_workers,
                "traffic": variant_totals(gateway.metrics.registry),
                "abtest": report.to_dict() if report else None,
                "abtest_threshold": math.log(1 / settings.alpha),
                "auto_promote": settings.auto_promote,
                "history": events,
                "history_error": history_error,
            }
        )
