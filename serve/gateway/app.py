"""The gateway as an ASGI app: the HTTP shell that wires the data plane to the control plane.

POST /invocations   predict role   MLflow's scoring protocol, routed to a variant (``scoring``)
POST /feedback      predict role   the true label of an earlier prediction (its own, or any: labeler)
GET  /abtest        predict role   the A/B analysis as it stands (read only: changes nothing)
POST /abtest/apply  admin role     analyse, and carry out a decision to promote or roll back
GET  /health        open           the process is alive (nothing more)
GET  /ready         open           every variant in the split has a ready backend (nothing more)
GET  /variants      any key        alias, version, weight, state, counters; backends: admin only
GET  /metrics       any key        Prometheus metrics
PUT  /admin/split   admin role     change the weights at run time
GET  /admin/usage   admin role     requests, images, errors and busy seconds per key and variant
POST /hooks/mlflow  signed         MLflow's alias webhooks: read the registry now (``webhooks``)
GET  /  and  /ops   open           the try-it and operations pages (static; they ask for a key)
GET  /ops/state     admin role     what the operations page shows (``pages``)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnist_mlops.common.names import DATA_DIR_ENV
from mnist_mlops.common.times import parse_moment
from mnist_mlops.registry.abtest import Policy
from mnist_mlops.registry.errors import RegistryError
from mnist_mlops.registry.inference_log.queries import LogReader
from mnist_mlops.registry.inference_log.writer import InferenceLog
from mnist_mlops.registry.promote import Gate
from mnist_mlops.serve.gateway.auth import KeyRing, load_keys
from mnist_mlops.serve.gateway.batching import BatchSettings
from mnist_mlops.serve.gateway.control.autopilot import Autopilot
from mnist_mlops.serve.gateway.control.follow_gate import FollowGate
from mnist_mlops.serve.gateway.control.follower import follow, sync_once
from mnist_mlops.serve.gateway.control.launcher import Launcher
from mnist_mlops.serve.gateway.control.pool import VariantPool
from mnist_mlops.serve.gateway.control.privilege import RunAs, backend_user, check_can_run
from mnist_mlops.serve.gateway.control.ray_launcher import RayLauncher
from mnist_mlops.serve.gateway.errors import (
    BadRequest,
    Conflict,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    Unauthenticated,
    client_error_code,
)
from mnist_mlops.serve.gateway.forwarding import new_client
from mnist_mlops.serve.gateway.limits import Limits
from mnist_mlops.serve.gateway.metrics import GatewayMetrics
from mnist_mlops.serve.gateway.pages import add_page_routes
from mnist_mlops.serve.gateway.protocol import JSON
from mnist_mlops.serve.gateway.requests import RawRequest, authenticate, read_body
from mnist_mlops.serve.gateway.scoring import DataPlane, DataPlaneSettings, Reply
from mnist_mlops.serve.gateway.settings import GatewaySettings
from mnist_mlops.serve.gateway.split import SplitError
from mnist_mlops.serve.gateway.webhooks import MAX_BODY as WEBHOOK_MAX_BODY
from mnist_mlops.serve.gateway.webhooks import PATH as WEBHOOK_PATH
from mnist_mlops.serve.gateway.webhooks import SECRET_ENV as WEBHOOK_SECRET_ENV
from mnist_mlops.serve.gateway.webhooks import Verifier, WebhookRefused, alias_move

logger = logging.getLogger(__name__)

INTERNAL_ERROR = b'{"error_code": "INTERNAL_ERROR", "message": "internal error"}'


def backends_run_as(settings: GatewaySettings) -> RunAs | None:
    """Who the backends run as (``control.privilege``), checked now: ``PrivilegeError`` (one
    line) when that user could not start one. Only started backends run model code."""
    run_as = backend_user(settings.backend_user)
    if run_as is not None and set(settings.served_split()) - set(settings.backend_urls):
        check_can_run(run_as)
    if run_as is None and os.geteuid() == 0:
        logger.warning("backends run as root (--backend_user root): model code runs with the gateway's rights")
    return run_as


def follow_gate_loader(settings: GatewaySettings):
    """The gate on follow, its labelled data read once, on first use, off the event loop."""
    loaded: list[FollowGate] = []

    async def gate() -> FollowGate:
        if not loaded:
            root = Path(os.environ.get(DATA_DIR_ENV) or "data").expanduser()
            loaded.append(
                await asyncio.to_thread(
                    FollowGate.from_data,
                    settings.follow_gate_data,
                    root,
                    settings.follow_gate_samples,
                    settings.follow_gate_min_accuracy,
                    settings.follow_gate_tolerance,
                )
            )
        return loaded[0]

    return gate


class Gateway:
    """Both planes of one gateway process, started and stopped with the app."""

    def __init__(self, settings: GatewaySettings, launcher: Launcher | None = None) -> None:
        """``launcher``: the local engine's, made by the caller (``mnist-gateway`` starts its warm
        pool ahead); None: made here from ``settings``."""
        self.settings = settings
        self.keys = None if settings.no_auth else KeyRing(load_keys(settings.api_keys))
        run_as = backends_run_as(settings)
        self.metrics = GatewayMetrics()
        self.log = InferenceLog(settings.inference_log, keep_days=settings.inference_log_days)
        # The control plane's client (health checks); the data path's client is made in start().
        self.control_client = httpx.AsyncClient(limits=httpx.Limits(max_connections=16))
        ray = settings.engine == "ray"
        launcher = (
            RayLauncher(
                settings.model_name,
                settings.tracking_uri,
                address=settings.ray_address,
                serve_url=settings.ray_serve_url,
                http_port=settings.ray_http_port,
                min_replicas=settings.min_replicas,
                max_replicas=settings.max_replicas,
                target_ongoing_requests=settings.scaling.target,
            )
            if ray
            else (launcher if launcher is not None else Launcher.for_gateway(settings, run_as))
        )
        self.pool = VariantPool(
            launcher,
            self.metrics,
            self.control_client,
            start_timeout=settings.start_timeout,
            gate=follow_gate_loader(settings) if settings.follow_gate else None,
            on_refusal=self.record_refusal,
            meter=self.log.record_replica_time,
            # On Ray, Ray Serve sizes the application: the pool keeps one backend per variant.
            min_replicas=1 if ray else settings.min_replicas,
            max_replicas=1 if ray else settings.max_replicas,
            scaling=settings.scaling,
            idle_after=settings.scale_to_zero_after,
        )
        self.pool.configure(settings.served_split(), settings.backend_urls)
        self.autopilot = Autopilot(
            self.pool,
            self.log,
            self.log.url,
            settings.model_name,
            settings.tracking_uri,
            settings.decision_interval,
            Policy(
                alpha=settings.alpha,
                min_feedback=settings.min_feedback,
                max_feedback_share=settings.max_feedback_share,
            ),
            Gate(min_accuracy=settings.min_accuracy),
            shadow=settings.shadow is not None,
        )
        self.data: DataPlane | None = None  # its backend client belongs to the serving event loop
        self._tasks: list[asyncio.Task] = []
        self.follow_now = asyncio.Event()  # set by a registry webhook: read the aliases at once
        self.webhooks = Verifier(settings.webhook_secret) if settings.webhook_secret else None

    async def record_refusal(self, alias: str, serving: str | None, refused: str, reason: str, figures: dict) -> None:
        """The gate's refusal in the promotion history, after the move it refused (recorded as a
        move outside the CLI if nobody recorded it). Needs write access to the registry: a
        gateway with a read-only user logs that it could not."""

        def write() -> None:
            from mnist_mlops.registry import history
            from mnist_mlops.registry.api import connect

            client = connect(self.settings.tracking_uri)
            history.reconciled(client, self.settings.model_name)
            why = f"{reason}; the gateway keeps serving v{serving}"
            event = history.Event(history.now_iso(), "gateway", "follow-refused", alias, refused, refused, why)
            history.append(client, self.settings.model_name, dataclasses.replace(event, figures=figures))

        try:
            await asyncio.to_thread(write)
        except Exception as exc:
            logger.warning("could not record the gate's refusal of v%s in the history: %s", refused, exc)

    def data_plane_settings(self) -> DataPlaneSettings:
        s = self.settings
        batching = None
        if s.batch_max_size > 1:
            batching = BatchSettings(
                max_size=s.batch_max_size,
                max_delay=s.batch_max_delay,
                slots=s.backend_workers,
                max_in_flight=max(4, 2 * s.backend_workers),
            )
        return DataPlaneSettings(
            s.max_body_bytes,
            s.request_timeout,
            batching,
            s.shadow,
            body_timeout=s.body_timeout,
            expose_variant=s.expose_variant,
            limits=Limits(s.rate_per_minute, s.max_in_flight_per_key, s.images_per_day),
            max_held=s.max_held,
            hold_timeout=s.hold_timeout,
        )

    async def start(self) -> None:
        s = self.settings
        self.data = DataPlane(
            self.data_plane_settings(), self.keys, self.pool.table, self.metrics, self.log, new_client(), self.pool.wake
        )
        if s.starts_backends_at_once():
            # A backend is wanted at once: the pool it forks from starts now, not after the registry read.
            self.pool.spawn(self.pool.launcher.prepare())
        self._tasks.append(
            asyncio.create_task(follow(self.pool, s.model_name, s.tracking_uri, s.poll_interval, self.follow_now))
        )
        self._tasks.append(asyncio.create_task(self.pool.watch()))
        self._tasks.append(asyncio.create_task(self.pool.autoscale()))
        if s.min_replicas == 0 and s.engine == "local":
            self._tasks.append(asyncio.create_task(self.pool.scale_to_zero()))
        if s.auto_promote:
            self._tasks.append(asyncio.create_task(self.autopilot.run()))
        # Start-up's objects (MLflow, pandas, FastAPI: about a million) move to the permanent
        # generation: a full collection then scans only what serving allocates, and no longer stalls
        # every request in flight for 100-150 ms every 20 s or so at 1,700 requests/s.
        gc.freeze()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.data.close()
        await self.pool.close()
        await self.control_client.aclose()
        await self.data.client.close()
        # Last: every request answered during the graceful shutdown is in the queue by now.
        await asyncio.to_thread(self.log.close)

    async def set_split(self, weights: object) -> dict[str, float]:
        """The admin's split change: applied now, the new aliases' backends started at once."""
        if not isinstance(weights, dict):
            raise SplitError('expected a JSON object of weights, like {"champion": 90, "challenger": 10}')
        self.pool.configure(weights)
        s = self.settings
        self.pool.spawn(sync_once(self.pool, s.model_name, s.tracking_uri))
        return self.pool.weights()


def create_app(settings: GatewaySettings, launcher: Launcher | None = None):
    """The gateway as an ASGI app: ``POST /invocations`` on a direct path, the rest through FastAPI.

    The scoring route is the hot path: FastAPI's middleware stack and router cost about 0.13 ms of
    CPU per request (py-spy), a large part of the gateway's budget, so that one route is dispatched
    before them, reading the ASGI scope and sending ASGI messages itself (same answers and error
    bodies as the FastAPI routes). ``.state.gateway`` is the ``Gateway``; ``launcher`` as there.
    """
    settings.check()
    gateway = Gateway(settings, launcher)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.stop()

    app = FastAPI(title="mnist-mlops gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway
    _add_error_handlers(app)
    _add_routes(app, gateway)
    add_page_routes(app, gateway)

    async def asgi(scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/invocations":
            await _invocations(gateway, scope, receive, send)
            return
        await app(scope, receive, send)

    asgi.state = app.state
    asgi.router = app.router  # lifespan, for in-process callers (tests)
    return asgi


async def _invocations(gateway: Gateway, scope, receive, send) -> None:
    if scope["method"] != "POST":
        error = MethodNotAllowed(f"{scope['method']} /invocations: send the request with POST")
        await Reply.error(error, {"Allow": "POST"}).send(send)
        return
    try:
        reply = await gateway.data.score(RawRequest(scope, receive))
    except Exception:  # score() answers every expected failure itself; this is the last net
        logger.exception("unexpected error on /invocations")
        reply = Reply(500, INTERNAL_ERROR, JSON, {})
    if reply is not None:
        await reply.send(send)


def _add_error_handlers(app: FastAPI) -> None:
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


def _add_routes(app: FastAPI, gateway: Gateway) -> None:
    settings = gateway.settings

    @app.post("/feedback")
    async def feedback(request: Request) -> JSONResponse:
        status, body = await gateway.data.feedback(request)
        return JSONResponse(body, status_code=status)

    @app.get("/abtest")
    async def abtest_report(request: Request) -> JSONResponse:
        """The latest automatic A/B analysis (``--auto_promote``), else a fresh one. Read only:
        reading it never moves an alias (``POST /abtest/apply`` does, for an admin)."""
        authenticate(request, gateway.keys, "predict")
        report = gateway.autopilot.last_report if settings.auto_promote else await gateway.autopilot.current()
        return JSONResponse(report.to_dict() if report else {"report": None})

    @app.post("/abtest/apply")
    async def abtest_apply(request: Request) -> JSONResponse:
        """Analyse now and carry out a decision to promote or roll back (gated, in the history)."""
        key = authenticate(request, gateway.keys, "admin")
        try:
            report = await gateway.autopilot.check()
        except RegistryError as exc:
            raise Conflict(str(exc)) from None
        if report is not None:
            logger.info("A/B decision %r applied on request of %s", report.decision, key.name if key else "no-auth")
        return JSONResponse(report.to_dict() if report else {"report": None})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "alive"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Ready or not, and nothing more: this route has no key, so it tells no ports, versions
        or errors (``/variants`` does, to a key)."""
        status = 200 if gateway.pool.table.is_ready() else 503
        return JSONResponse({"ready": status == 200}, status_code=status)

    @app.get("/variants")
    async def variants(request: Request) -> dict:
        key = authenticate(request, gateway.keys, "predict")
        detailed = key is None or key.allows("admin")
        return {"model": settings.model_name, "variants": gateway.pool.table.describe(detailed)}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        authenticate(request, gateway.keys, "predict")
        for alias, variant in gateway.pool.variants.items():
            gateway.metrics.in_flight.labels(alias).set(variant.active)
            gateway.metrics.images_in_flight.labels(alias).set(variant.active_rows)
        gateway.metrics.log_backlog.set(gateway.log.backlog)
        gateway.metrics.log_lost.set(gateway.log.lost)
        gateway.metrics.log_failing.set(1 if gateway.log.failing else 0)
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(WEBHOOK_PATH)
    async def registry_webhook(request: Request) -> JSONResponse:
        """MLflow's signed alias events (``webhooks``): the registry is read at once. Refusals
        are 401 and change nothing; without ``$MNIST_WEBHOOK_SECRET`` the route is off."""
        if gateway.webhooks is None:
            raise NotFound(f"webhooks are off: start the gateway with {WEBHOOK_SECRET_ENV} set")
        body = await read_body(request, WEBHOOK_MAX_BODY, settings.body_timeout)
        try:
            payload = gateway.webhooks.verify(request.headers, body, time.time())
        except WebhookRefused as exc:
            gateway.metrics.webhooks.labels("refused").inc()
            logger.warning("webhook refused from %s: %s", request.client.host if request.client else "?", exc)
            raise Unauthenticated(str(exc)) from None
        move = alias_move(payload, settings.model_name)
        if move is None:
            gateway.metrics.webhooks.labels("ignored").inc()
            return JSONResponse({"accepted": False, "reason": f"not an alias event of {settings.model_name}"})
        gateway.metrics.webhooks.labels("accepted").inc()
        logger.info("webhook: %s %s -> v%s; reading the registry now", move["event"], move["alias"], move["version"])
        gateway.follow_now.set()
        return JSONResponse({"accepted": True} | move)

    @app.get("/admin/usage")
    async def usage(request: Request) -> JSONResponse:
        """What each key used of each variant between ``since`` and ``until`` (ISO 8601, or a
        duration ago like ``30m``, ``1d``; default: everything up to now), from the inference log."""
        authenticate(request, gateway.keys, "admin")
        query = request.query_params
        try:
            since = parse_moment(query.get("since"), "since")
            until = parse_moment(query.get("until"), "until") if query.get("until") else time.time()
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

        def read() -> tuple[list[dict], dict[str, float]]:
            with LogReader(settings.inference_log) as log:
                return [row.to_dict() for row in log.usage(since, until)], log.replica_seconds(since, until)

        await asyncio.wrap_future(gateway.log.flush())  # what was answered before this call is counted
        rows, replicas = await asyncio.to_thread(read)
        held = [{"variant": variant, "replica_seconds": round(seconds, 3)} for variant, seconds in replicas.items()]
        return JSONResponse({"since": since, "until": until, "usage": rows, "replicas": held})

    @app.put("/admin/split")
    async def set_split(request: Request) -> dict:
        key = authenticate(request, gateway.keys, "admin")
        try:
            body = await read_body(request, 64 * 1024, settings.body_timeout)
            weights = await gateway.set_split(json.loads(body or b"null"))
        except (ValueError, SplitError) as exc:  # SplitError is a ValueError, as is bad JSON
            raise BadRequest(f"invalid split: {exc}") from None
        logger.info("split changed to %s by %s", weights, key.name if key else "no-auth")
        return {"split": weights}
