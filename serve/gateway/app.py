"""The gateway's HTTP surface (FastAPI): a thin shell over routing, forwarding and the pool.

POST /invocations   predict role   MLflow's scoring protocol, routed to a variant
GET  /health        open           the process is alive
GET  /ready         open           every variant in the split has a ready backend
GET  /variants      any key        alias, version, weight, backend state, counters
GET  /metrics       any key        Prometheus metrics
PUT  /admin/split   admin role     change the weights at run time
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serve.gateway.auth import KeyRing, load_keys
from serve.gateway.backends import Launcher
from serve.gateway.errors import BadRequest, GatewayError, Unavailable
from serve.gateway.follower import follow, resolve_aliases
from serve.gateway.metrics import GatewayMetrics
from serve.gateway.proxy import forward
from serve.gateway.requests import authenticate, read_body, request_id
from serve.gateway.settings import GatewaySettings
from serve.gateway.split import SplitError
from serve.gateway.variants import CHAMPION, Variant, VariantPool

logger = logging.getLogger(__name__)
access_log = logging.getLogger("mnist.gateway.access")


class Gateway:
    """The state behind the routes: settings, keys, metrics, the variant pool."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.keys = None if settings.no_auth else KeyRing(load_keys(settings.api_keys))
        self.metrics = GatewayMetrics()
        # One pooled client for all backends: keep-alive connections, no per-request handshake.
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)
        )
        launcher = Launcher(
            settings.model_name,
            settings.tracking_uri,
            settings.backend_mode,
            settings.backend_workers,
            str(settings.log_dir) if settings.log_dir else None,
        )
        self.pool = VariantPool(launcher, self.metrics, self.client, start_timeout=settings.start_timeout)
        self.pool.configure(settings.split, settings.backend_urls)
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._first_sync_then_follow()))

    async def _first_sync_then_follow(self) -> None:
        s = self.settings
        while True:
            try:
                await self.pool.sync(await resolve_aliases(s.model_name, s.tracking_uri))
                break
            except Exception as exc:  # registry not reachable yet: keep trying, /ready says so
                logger.warning("cannot resolve the aliases of %s yet: %s", s.model_name, exc)
                await asyncio.sleep(s.poll_interval)
        described = ", ".join(f"{v.alias}=v{v.version}({v.state})" for v in self.pool.variants.values())
        logger.info(
            "gateway %s: %s",
            "ready" if self.pool.is_ready() else "serving, not every variant is up",
            described,
        )
        await follow(self.pool, s.model_name, s.tracking_uri, s.poll_interval)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.pool.close()
        await self.client.aclose()

    async def score(self, request: Request) -> Response:
        """Route and forward one scoring request; always leaves one access-log line."""
        started = time.perf_counter()
        rid = request_id(request)
        key, variant, status = None, None, 500
        try:
            key = authenticate(request, self.keys, "predict")
            body = await read_body(request, self.settings.max_body_bytes)
            variant = self.pool.route(request.headers.get("x-user-id"))
            answer, variant = await self._forward(variant, body, request.headers.get("content-type"), rid)
            status = answer.status
            return Response(
                answer.body,
                status_code=status,
                media_type=answer.content_type,
                headers={
                    "X-Model-Version": str(variant.version),
                    "X-Variant": variant.alias,
                    "X-Request-ID": rid,
                },
            )
        except GatewayError as error:
            status = error.status
            headers = error.headers | {"X-Request-ID": rid}
            if variant is not None:
                headers |= {"X-Variant": variant.alias, "X-Model-Version": str(variant.version)}
            return JSONResponse(error.body(), status_code=status, headers=headers)
        finally:
            self._account(variant, key, rid, status, time.perf_counter() - started)

    async def _forward(self, variant: Variant, body: bytes, content_type: str | None, rid: str):
        headers = {"Content-Type": content_type or "application/json", "X-Request-ID": rid}
        backend = variant.backend
        try:
            return await forward(self.client, backend, body, headers, self.settings.request_timeout), variant
        except Unavailable:
            # The backend died under us: mark it down (the follower restarts it) and let the
            # champion answer this request, if it is another, healthy backend.
            if not backend.alive():
                variant.state = "down"
            champion = self.pool.variants.get(CHAMPION)
            if champion is None or champion is variant or not champion.ready:
                raise
            answer = await forward(
                self.client, champion.backend, body, headers, self.settings.request_timeout
            )
            return answer, champion

    def _account(self, variant: Variant | None, key, rid: str, status: int, seconds: float) -> None:
        alias = variant.alias if variant else "-"
        version = str(variant.version) if variant else "-"
        m = self.metrics
        m.requests.labels(alias, version, str(status)).inc()
        if variant is not None:
            m.latency.labels(alias, version).observe(seconds)
            variant.requests += 1
            if status >= 400:
                variant.errors += 1
        if status >= 400:
            m.errors.labels(alias, version, "client" if status < 500 else "server").inc()
        access_log.info(
            json.dumps(
                {
                    "request_id": rid,
                    "key": key.name if key else None,
                    "variant": alias,
                    "version": version,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                }
            )
        )


def create_app(settings: GatewaySettings) -> FastAPI:
    settings.check()
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.stop()

    app = FastAPI(
        title="mnist-mlops gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.gateway = gateway

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, error: GatewayError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error_code": "INTERNAL_ERROR", "message": "internal error"}, status_code=500)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        return await gateway.score(request)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "alive"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        variants = [v.describe() for v in gateway.pool.variants.values()]
        status = 200 if gateway.pool.is_ready() else 503
        return JSONResponse({"ready": status == 200, "variants": variants}, status_code=status)

    @app.get("/variants")
    async def variants(request: Request) -> dict:
        authenticate(request, gateway.keys, "predict")
        return {
            "model": settings.model_name,
            "variants": [v.describe() for v in gateway.pool.variants.values()],
        }

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        authenticate(request, gateway.keys, "predict")
        for alias, variant in gateway.pool.variants.items():
            gateway.metrics.in_flight.labels(alias).set(variant.backend.in_flight if variant.backend else 0)
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.put("/admin/split")
    async def set_split(request: Request) -> dict:
        key = authenticate(request, gateway.keys, "admin")
        try:
            weights = json.loads(await read_body(request, 64 * 1024) or b"null")
            if not isinstance(weights, dict):
                raise SplitError('expected a JSON object of weights, like {"champion": 90, "challenger": 10}')
            gateway.pool.configure(weights)
        except (ValueError, SplitError) as exc:  # SplitError is a ValueError, as is bad JSON
            raise BadRequest(f"invalid split: {exc}") from None
        gateway.pool.spawn(_sync_now(gateway))
        logger.info("split changed to %s by %s", gateway.pool.weights(), key.name if key else "no-auth")
        return {"split": gateway.pool.weights()}

    return app


async def _sync_now(gateway: Gateway) -> None:
    s = gateway.settings
    with contextlib.suppress(Exception):
        await gateway.pool.sync(await resolve_aliases(s.model_name, s.tracking_uri))
