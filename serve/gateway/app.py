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
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from registry.abtest import Policy
from registry.promote import Gate
from serve.gateway.auth import KeyRing, load_keys
from serve.gateway.autopilot import Autopilot
from serve.gateway.backends import Launcher
from serve.gateway.batching import Batcher, BatchSettings, mergeable
from serve.gateway.errors import BadRequest, GatewayError, MethodNotAllowed, Unavailable, client_error_code
from serve.gateway.follower import follow, resolve_aliases
from serve.gateway.inference_log import Answer, FeedbackError, InferenceLog, client_hash
from serve.gateway.logsetup import log_access
from serve.gateway.metrics import GatewayMetrics, VariantMetrics
from serve.gateway.proxy import JSON, backend_headers, forward, new_session
from serve.gateway.requests import RawRequest, authenticate, read_body, request_id
from serve.gateway.settings import GatewaySettings
from serve.gateway.split import SplitError
from serve.gateway.variants import CHAMPION, Variant, VariantPool

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer; logged, never sent

MAX_SHADOW_IN_FLIGHT = 64
FEEDBACK_SHAPE = 'expected a JSON object like {"request_id": "<X-Request-ID of the prediction>", "label": 3}'
FEEDBACK_CODES = {
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_ALREADY_EXISTS",
    503: "TEMPORARILY_UNAVAILABLE",
}


@dataclass(slots=True)
class Reply:
    """A scoring answer, sent as raw ASGI messages (the hot path skips Starlette's Response)."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]

    async def send(self, send) -> None:
        raw = [(b"content-type", self.content_type.encode("latin-1")), (b"content-length", b"%d" % len(self.body))]
        raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


class Gateway:
    """The state behind the routes: settings, keys, metrics, the variant pool."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.keys = None if settings.no_auth else KeyRing(load_keys(settings.api_keys))
        self.metrics = GatewayMetrics()
        # The control plane's client (health checks); the data path's client is made in start().
        self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=16))
        self.session = None
        launcher = Launcher(
            settings.model_name,
            settings.tracking_uri,
            settings.backend_mode,
            settings.backend_workers,
            str(settings.log_dir) if settings.log_dir else None,
        )
        self.pool = VariantPool(launcher, self.metrics, self.client, start_timeout=settings.start_timeout)
        self.pool.configure(settings.served_split(), settings.backend_urls)
        self.log = InferenceLog(settings.inference_log, keep_days=settings.inference_log_days)
        self.batching = (
            BatchSettings(
                max_size=settings.batch_max_size,
                max_delay=settings.batch_max_delay,
                slots=settings.backend_workers,
                max_in_flight=max(4, 2 * settings.backend_workers),
            )
            if settings.batch_max_size > 1
            else None
        )
        self.shadow_slots = asyncio.Semaphore(MAX_SHADOW_IN_FLIGHT)
        self.autopilot = Autopilot(
            self.pool,
            self.log,
            settings.inference_log,
            settings.model_name,
            settings.tracking_uri,
            settings.decision_interval,
            Policy(alpha=settings.alpha, min_feedback=settings.min_feedback),
            Gate(min_accuracy=settings.min_accuracy),
            shadow=settings.shadow is not None,
        )
        self._tasks: list[asyncio.Task] = []
        self._labelled: dict[tuple[str, str], VariantMetrics] = {}

    async def start(self) -> None:
        self.session = new_session()
        self._tasks.append(asyncio.create_task(self._first_sync_then_follow()))
        if self.settings.auto_promote:
            self._tasks.append(asyncio.create_task(self.autopilot.run()))

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
        await self.session.close()
        # Last: every request answered during the graceful shutdown is in the queue by now.
        await asyncio.to_thread(self.log.close)

    async def score(self, request: RawRequest) -> Reply | None:
        """Route and forward one scoring request; always leaves one access-log line.

        None when the client went away before its body was read (nobody to answer).
        """
        started = time.perf_counter()
        rid = request_id(request)
        key, variant, status, user = None, None, 500, None
        try:
            key = authenticate(request, self.keys, "predict")
            body = await read_body(request, self.settings.max_body_bytes)
            user = request.headers.get("x-user-id")
            variant = self.pool.route(user)
            content_type = request.headers.get("content-type")
            answer, variant = await self._forward(variant, body, content_type, rid)
            status = answer.status
            self._log(rid, "serve", variant, user, time.perf_counter() - started, status, answer.body)
            if self.settings.shadow and variant.alias == CHAMPION and status == 200:
                self._shadow(body, content_type, rid, user)
            return Reply(
                status,
                answer.body,
                answer.content_type,
                {"x-model-version": str(variant.version), "x-variant": variant.alias, "x-request-id": rid},
            )
        except GatewayError as error:
            status = error.status
            headers = error.headers | {"X-Request-ID": rid}
            if variant is not None:
                headers |= {"X-Variant": variant.alias, "X-Model-Version": str(variant.version)}
                self._log(rid, "serve", variant, user, time.perf_counter() - started, status, b"")
            return Reply(status, json.dumps(error.body()).encode(), JSON, headers)
        except ClientDisconnect:
            status = CLIENT_CLOSED_REQUEST
            return None
        finally:
            self._account(variant, key, rid, status, time.perf_counter() - started)

    def _batcher(self, variant: Variant) -> Batcher:
        if variant.batcher is None:
            rows_seen = self.metrics.batch_size.labels(variant.alias)  # labelled once, not per batch
            waits_seen = self.metrics.batch_wait.labels(variant.alias)
            variant.batcher = Batcher(
                self.session,
                self.batching,
                self.settings.request_timeout,
                current_backend=lambda: variant.backend,
                observe_batch=lambda rows, wait: (rows_seen.observe(rows), waits_seen.observe(wait)),
            )
        return variant.batcher

    async def _send(self, variant: Variant, body: bytes, content_type: str | None, rid: str):
        """Through the variant's micro-batcher when the request can be merged, else directly."""
        if self.batching is not None:
            merge = mergeable(body, content_type)
            if merge is not None:
                return await self._batcher(variant).submit(*merge, rid)
        headers = backend_headers(rid, content_type)
        return await forward(self.session, variant.backend, body, headers, self.settings.request_timeout)

    async def _forward(self, variant: Variant, body: bytes, content_type: str | None, rid: str):
        backend = variant.backend
        try:
            return await self._send(variant, body, content_type, rid), variant
        except Unavailable:
            # The backend died under us: mark it down (the follower restarts it) and let the
            # champion answer this request, if it is another, healthy backend.
            if not backend.alive():
                variant.state = "down"
            champion = self.pool.variants.get(CHAMPION)
            if champion is None or champion is variant or not champion.ready:
                raise
            headers = backend_headers(rid, content_type)
            answer = await forward(self.session, champion.backend, body, headers, self.settings.request_timeout)
            return answer, champion

    def _log(
        self,
        rid: str,
        role: str,
        variant: Variant,
        user: str | None,
        seconds: float,
        status: int,
        body: bytes,
    ) -> None:
        """Queue the answer for the inference log (the writer thread parses and stores it)."""
        self.log.record(
            Answer(
                rid,
                role,
                time.time(),
                variant.alias,
                variant.version,
                client_hash(user),
                round(seconds * 1000, 3),
                status,
                body,
            )
        )

    def _shadow(self, body: bytes, content_type: str | None, rid: str, user: str | None) -> None:
        """Send a copy to the shadow alias off the response path; drop it when too many are pending.

        The copy takes the path a live request to that alias would take, its micro-batcher
        included: sent one by one, copies of micro-batched champion traffic queued up behind a
        backend answering one at a time (a CI run logged a shadow p99 of 790 ms against the
        champion's 44 ms, and dropped 70 of 200 copies), and the A/B analysis then blamed the
        challenger for the gateway's queue.
        """
        shadow = self.pool.variants.get(self.settings.shadow)
        if shadow is None or not shadow.ready or self.shadow_slots.locked():
            self.metrics.rejected.labels("shadow_skipped").inc()
            return

        async def run() -> None:
            async with self.shadow_slots:
                started = time.perf_counter()
                try:
                    answer = await self._send(shadow, body, content_type, rid)
                    status, answer_body = answer.status, answer.body
                except GatewayError as error:
                    status, answer_body = error.status, b""
                self._log(rid, "shadow", shadow, user, time.perf_counter() - started, status, answer_body)

        self.pool.spawn(run())

    async def feedback(self, request: Request) -> JSONResponse:
        authenticate(request, self.keys, "predict")
        try:
            payload = json.loads(await read_body(request, 64 * 1024))
        except ValueError:
            raise BadRequest(FEEDBACK_SHAPE) from None
        if not isinstance(payload, dict):
            raise BadRequest(FEEDBACK_SHAPE)
        request_id, label, row = payload.get("request_id"), payload.get("label"), payload.get("row", 0)
        if not isinstance(request_id, str) or not request_id:
            raise BadRequest(f"request_id must be the X-Request-ID of an earlier prediction; {FEEDBACK_SHAPE}")
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label <= 9:
            raise BadRequest(f"label must be a whole number from 0 to 9, got {label!r}")
        if not isinstance(row, int) or isinstance(row, bool) or row < 0:
            raise BadRequest(f"row must be a whole number >= 0 (the row of the request), got {row!r}")
        try:
            await asyncio.wrap_future(self.log.feedback(request_id, row, label))
        except FeedbackError as error:
            return JSONResponse(
                {"error_code": FEEDBACK_CODES.get(error.status, "INTERNAL_ERROR"), "message": str(error)},
                status_code=error.status,
            )
        return JSONResponse({"recorded": True, "request_id": request_id, "row": row, "label": label})

    def _variant_metrics(self, alias: str, version: str) -> VariantMetrics:
        cached = self._labelled.get((alias, version))
        if cached is None:
            cached = self._labelled[(alias, version)] = VariantMetrics(self.metrics, alias, version)
        return cached

    def _account(self, variant: Variant | None, key, rid: str, status: int, seconds: float) -> None:
        alias = variant.alias if variant else "-"
        version = str(variant.version) if variant else "-"
        m = self.metrics
        labelled = self._variant_metrics(alias, version)
        labelled.requests(status).inc()
        if variant is not None:
            labelled.latency.observe(seconds)
            variant.requests += 1
            if status >= 400:
                variant.errors += 1
        if status >= 400:
            m.errors.labels(alias, version, "client" if status < 500 else "server").inc()
        # A dict, not a string: the JSON is made by the log-writing thread, off the event loop.
        log_access(
            {
                "request_id": rid,
                "key": key.name if key else None,
                "variant": alias,
                "version": version,
                "status": status,
                "ms": round(seconds * 1000, 2),
            }
        )


def create_app(settings: GatewaySettings):
    """The gateway as an ASGI app: ``POST /invocations`` on a direct path, the rest through FastAPI.

    The scoring route is the hot path: measured with py-spy, FastAPI's middleware stack and router
    cost about 0.13 ms of CPU per request, a large part of the gateway's 1 ms budget, so that one
    route is dispatched before them, reading the ASGI scope and sending ASGI messages itself
    (same answers and error bodies as the FastAPI routes).
    """
    settings.check()
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.stop()

    app = FastAPI(title="mnist-mlops gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, error: GatewayError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        """Starlette's own 404 and 405 (an unknown path, a route's wrong method) in the gateway's
        error shape rather than FastAPI's ``{"detail": ...}``."""
        message = f"{error.detail}: {request.method} {request.url.path}"
        body = {"error_code": client_error_code(error.status_code), "message": message}
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error_code": "INTERNAL_ERROR", "message": "internal error"}, status_code=500)

    @app.post("/feedback")
    async def feedback(request: Request) -> JSONResponse:
        return await gateway.feedback(request)

    @app.get("/abtest")
    async def abtest_report(request: Request) -> JSONResponse:
        """The latest automatic A/B analysis (``--auto_promote``), else a fresh one (read only)."""
        authenticate(request, gateway.keys, "predict")
        report = await gateway.autopilot.check() if not settings.auto_promote else gateway.autopilot.last_report
        return JSONResponse(report.to_dict() if report else {"report": None})

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

    async def asgi(scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/invocations":
            if scope["method"] != "POST":
                error = MethodNotAllowed(f"{scope['method']} /invocations: send the request with POST")
                await Reply(error.status, json.dumps(error.body()).encode(), JSON, {"Allow": "POST"}).send(send)
                return
            try:
                reply = await gateway.score(RawRequest(scope, receive))
            except Exception:  # score() answers every expected failure itself; this is the last net
                logger.exception("unexpected error on /invocations")
                reply = Reply(500, b'{"error_code": "INTERNAL_ERROR", "message": "internal error"}', JSON, {})
            if reply is not None:
                await reply.send(send)
            return
        await app(scope, receive, send)

    asgi.state = app.state
    return asgi


async def _sync_now(gateway: Gateway) -> None:
    s = gateway.settings
    with contextlib.suppress(Exception):
        await gateway.pool.sync(await resolve_aliases(s.model_name, s.tracking_uri))
