"""The data plane: one scoring request through a fixed pipeline, and feedback on an earlier one.

    authenticate -> the key's limits -> read the body -> parse it once -> choose a variant
    (``routing``, pure) -> send (micro-batched, or on its own) -> answer -> record (inference log,
    metrics, access line)

Every stage's failure is a ``GatewayError`` carrying its status; the pipeline turns it into the
answer. The data plane reads the table of variants and never changes it: starting backends,
following the registry and deciding the A/B test are the control plane's (``control``); it only
flags a backend it could not reach (``Backend.failed``, set by ``forwarding.forward``): passed over
while another replica serves, restarted by the control plane, or cleared once it answers ``/ping``.

What a client can and cannot touch (``docs/security.md``): the request id is the gateway's own
(the client's ``X-Request-ID`` is kept beside it, for correlation); which variant answered is told
only to admin keys or with ``expose_variant``; a prediction is labelled only by the key that asked
for it or by a ``labeler`` key, once.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import ClientDisconnect

from mnist_mlops.common.names import CHAMPION
from mnist_mlops.registry.inference_log.writer import Answer, FeedbackError, InferenceLog, Labeller, client_hash
from mnist_mlops.serve.gateway import routing
from mnist_mlops.serve.gateway.access_log import log_access
from mnist_mlops.serve.gateway.auth import ApiKey, KeyRing
from mnist_mlops.serve.gateway.backend_http import BackendClient
from mnist_mlops.serve.gateway.batching import Batcher, BatchSettings
from mnist_mlops.serve.gateway.errors import BadRequest, GatewayError, TooManyRequests, Unavailable
from mnist_mlops.serve.gateway.forwarding import BackendAnswer, backend_headers, forward
from mnist_mlops.serve.gateway.limits import LimitBook, LimitExceeded, Limits
from mnist_mlops.serve.gateway.metrics import GatewayMetrics, KeyUsage, VariantMetrics
from mnist_mlops.serve.gateway.protocol import JSON, ScoringRequest, parse
from mnist_mlops.serve.gateway.requests import (
    RawRequest,
    authenticate,
    client_request_id,
    new_request_id,
    read_body,
)
from mnist_mlops.serve.gateway.state import Table, Variant
from mnist_mlops.serve.gateway.tasks import TaskSet

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer; logged, never sent
MAX_SHADOW_IN_FLIGHT = 64
MAX_WAITING_FOR_BACKEND = 512  # requests held until a backend is reachable again; more get 503 at once
FEEDBACK_BODY_LIMIT = 64 * 1024
FEEDBACK_SHAPE = 'expected a JSON object like {"request_id": "<X-Request-ID of the prediction>", "label": 3}'
FEEDBACK_CODES = {
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_ALREADY_EXISTS",
    503: "TEMPORARILY_UNAVAILABLE",
}
NO_KEY = "-"  # the limits' name for requests of a gateway that runs without keys


@dataclass(slots=True)
class Reply:
    """A scoring answer, sent as raw ASGI messages (the hot path skips Starlette's Response)."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]

    @classmethod
    def error(cls, error: GatewayError, headers: dict[str, str] | None = None) -> Reply:
        return cls(error.status, json.dumps(error.body()).encode(), JSON, error.headers | (headers or {}))

    async def send(self, send) -> None:
        raw = [(b"content-type", self.content_type.encode("latin-1")), (b"content-length", b"%d" % len(self.body))]
        raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


@dataclass(frozen=True)
class DataPlaneSettings:
    max_body_bytes: int
    request_timeout: float
    batching: BatchSettings | None  # None: every request goes to its backend on its own
    shadow: str | None = None  # the alias that gets a copy of every champion request
    body_timeout: float = 30.0  # seconds a request's body may take to arrive
    expose_variant: bool = False  # tell every client which variant answered (else admin keys only)
    limits: Limits = field(default_factory=Limits)  # the per-key limits of keys without their own
    max_held: int = 256  # requests held at once while their variant wakes from zero; more get 503
    hold_timeout: float = 30.0  # seconds a held request waits for its variant to wake


class DataPlane:
    """Scoring and feedback over the table of variants the control plane keeps."""

    def __init__(
        self,
        settings: DataPlaneSettings,
        keys: KeyRing | None,
        table: Table,
        metrics: GatewayMetrics,
        log: InferenceLog,
        client: BackendClient,
        wake: Callable[[Variant], Awaitable[None]] | None = None,
    ) -> None:
        """``wake``: the control plane's start of a variant scaled to zero (``VariantPool.wake``)."""
        self.settings = settings
        self.wake = wake
        self.held = 0
        self.keys = keys
        self.table = table
        self.metrics = metrics
        self.log = log
        self.client = client
        self.rng = random.Random()
        self.shadow_slots = asyncio.Semaphore(MAX_SHADOW_IN_FLIGHT)
        self._labelled: dict[tuple[str, str], VariantMetrics] = {}
        self._usage: dict[tuple[str, str], KeyUsage] = {}
        self.tasks = TaskSet()
        own = {key.name: key.limits.merged(settings.limits) for key in keys.keys} if keys else {}
        self.limits = LimitBook(own, settings.limits)
        self.waiting_for_backend = 0

    # --- scoring -------------------------------------------------------------------------------
    async def score(self, raw: RawRequest) -> Reply | None:
        """Answer one scoring request; always leaves one access-log line.

        None when the client went away before its body was read (nobody to answer).
        """
        started = time.perf_counter()
        rid, client_rid = new_request_id(), client_request_id(raw)
        key, variant, status, admitted, routed = None, None, 500, None, None
        user = raw.headers.get("x-user-id")
        try:
            key = authenticate(raw, self.keys, "predict")
            admitted = self._admit(key)
            request = parse(
                await read_body(raw, self.settings.max_body_bytes, self.settings.body_timeout),
                raw.headers.get("content-type"),
            )
            self._charge(admitted, request.row_count)
            variant = routed = routing.choose(self.table, user, self.rng)
            variant.last_request = time.monotonic()
            variant.count_in(request.row_count)
            if variant.asleep:
                await self._hold_until_awake(variant)
            answer, variant = await self._answer(variant, request, rid, started + self.settings.request_timeout)
            status = answer.status
            self._meter(key, variant, request.row_count, answer.backend_seconds)
            self._record(rid, "serve", variant, user, time.perf_counter() - started, answer, key, client_rid)
            if self.settings.shadow and variant.alias == CHAMPION and status == 200:
                self._shadow(request, rid, user)
            return Reply(status, answer.body, answer.content_type, self._identity(rid, client_rid, key, variant))
        except GatewayError as error:
            status = error.status
            if variant is not None:
                failed = BackendAnswer(status, b"", JSON)
                self._record(rid, "serve", variant, user, time.perf_counter() - started, failed, key, client_rid)
            return Reply.error(error, self._identity(rid, client_rid, key, variant))
        except ClientDisconnect:
            status = CLIENT_CLOSED_REQUEST
            return None
        finally:
            if admitted is not None:
                self.limits.release(admitted)
            if routed is not None:
                routed.count_out(request.row_count)
            self._account(variant, key, (rid, client_rid), status, time.perf_counter() - started)

    def _admit(self, key: ApiKey | None) -> str:
        """Take the request in under its key's rate and concurrency limits (429 past them)."""
        name = key.name if key else NO_KEY
        try:
            self.limits.admit(name, time.time())
        except LimitExceeded as over:
            self.metrics.rejected.labels("key_limit").inc()
            raise TooManyRequests(str(over), headers={"Retry-After": str(over.retry_after)}) from None
        return name

    def _charge(self, name: str, images: int) -> None:
        """Charge the request's images to its key's daily quota (429 past it)."""
        try:
            self.limits.charge_images(name, images, time.time())
        except LimitExceeded as over:
            self.metrics.rejected.labels("key_quota").inc()
            raise TooManyRequests(str(over), headers={"Retry-After": str(over.retry_after)}) from None

    def _identity(self, rid: str, client_rid: str | None, key: ApiKey | None, variant: Variant | None) -> dict:
        """The answer's ids; which variant and version answered only where the client may know it
        (with it, a client could label one arm wrong and the other right)."""
        headers = {"X-Request-ID": rid}
        if client_rid:
            headers["X-Client-Request-ID"] = client_rid
        if variant is not None and (self.settings.expose_variant or (key is not None and key.allows("admin"))):
            headers |= {"X-Variant": variant.alias, "X-Model-Version": str(variant.version)}
        return headers

    async def _answer(
        self, variant: Variant, request: ScoringRequest, rid: str, deadline: float
    ) -> tuple[BackendAnswer, Variant]:
        """The variant's answer. When its backend cannot be reached: the champion's (never the
        other way round: ``routing.fallback``); with no champion to stand in (the champion's own
        requests), the same variant's once its backend is back, if that is before ``deadline``."""
        try:
            return await self._send(variant, request, rid), variant
        except Unavailable:  # ``forward`` marked the backend that failed; the control plane checks it
            stand_in = routing.fallback(self.table, variant)
            if stand_in is None:
                await self._wait_for_reachable_backend(variant, deadline)
                stand_in = variant
            return await self._send(stand_in, request, rid, batch=False), stand_in

    async def _hold_until_awake(self, variant: Variant) -> None:
        """The activator: hold the request while its variant wakes from zero replicas, then let it
        through; 503 with ``Retry-After`` past ``max_held`` held requests, after ``hold_timeout``,
        or when the wake-up fails (nothing was sent anywhere: the client may retry)."""
        wait = variant.wake_retry_at - time.monotonic()
        if wait > 0:  # its last wake failed: no new start before the backoff is over
            raise Unavailable(
                f"the {variant.alias} cannot start: {variant.last_error}; retry in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        if self.wake is None or self.held >= self.settings.max_held:
            self.metrics.rejected.labels("held_full").inc()
            raise Unavailable(
                f"the {variant.alias} is starting from zero replicas and {self.held} requests wait for it already; "
                "retry in a moment",
                headers={"Retry-After": routing.RETRY_AFTER_SECONDS},
            )
        self.held += 1
        self.metrics.held.set(self.held)
        try:
            async with asyncio.timeout(self.settings.hold_timeout):
                await asyncio.shield(self.wake(variant))
        except Exception as exc:
            failed = variant.last_error or "failed to start"
            why = "did not start in time" if isinstance(exc, TimeoutError) else failed
            raise Unavailable(
                f"the {variant.alias} is starting from zero replicas and {why}; retry in a moment",
                headers={"Retry-After": routing.RETRY_AFTER_SECONDS},
            ) from None
        finally:
            self.held -= 1
            self.metrics.held.set(self.held)
        if not variant.ready:
            raise routing.unavailable(variant)

    async def _wait_for_reachable_backend(self, variant: Variant, deadline: float) -> None:
        """Until ``variant`` has a ready backend that is alive and not marked failed (another
        replica, or the one that failed once restarted or found healthy); 503 at ``deadline``, when
        its restart failed, or when too many requests wait already."""
        if self.waiting_for_backend >= MAX_WAITING_FOR_BACKEND:
            raise routing.unavailable(variant)
        self.waiting_for_backend += 1
        try:
            while time.perf_counter() < deadline and variant.state != "failed":
                current = variant.backend
                if variant.ready and current is not None and not current.failed and current.alive():
                    return
                await asyncio.sleep(0.02)
        finally:
            self.waiting_for_backend -= 1
        raise routing.unavailable(variant)

    async def _send(self, variant: Variant, request: ScoringRequest, rid: str, batch: bool = True) -> BackendAnswer:
        """Through the variant's micro-batcher when the request can be merged, else on its own."""
        if batch and self.settings.batching is not None:
            batcher = self._batcher(variant)
            return await (batcher.submit(request, rid) if request.mergeable else batcher.send_alone(request, rid))
        headers = backend_headers(rid, request.content_type)
        return await forward(self.client, variant.backend, request.body, headers, self.settings.request_timeout)

    def _batcher(self, variant: Variant) -> Batcher:
        if variant.batcher is None:
            rows_seen = self.metrics.batch_size.labels(variant.alias)  # labelled once, not per batch
            waits_seen = self.metrics.batch_wait.labels(variant.alias)
            variant.batcher = Batcher(
                self.client,
                self.settings.batching,
                self.settings.request_timeout,
                current_backend=lambda: variant.backend,
                replicas=lambda: len(variant.replicas),
                observe_batch=lambda rows, wait: (rows_seen.observe(rows), waits_seen.observe(wait)),
            )
        return variant.batcher

    def _shadow(self, request: ScoringRequest, rid: str, user: str | None) -> None:
        """Send a copy to the shadow alias off the response path; drop it when too many are pending.

        The copy takes the path a live request to that alias would take, its micro-batcher
        included, so the latency logged for it is the one it would serve with.
        """
        shadow = self.table.get(self.settings.shadow)
        if shadow is not None:
            shadow.last_request = time.monotonic()  # the champion's traffic keeps its shadow awake
            if shadow.asleep and self.wake is not None:
                self.wake(shadow)  # this copy is dropped; the ones after it find the shadow up
        if shadow is None or not shadow.ready or self.shadow_slots.locked():
            self.metrics.rejected.labels("shadow_skipped").inc()
            return

        async def run() -> None:
            async with self.shadow_slots:
                started = time.perf_counter()
                shadow.count_in(request.row_count)
                try:
                    answer = await self._send(shadow, request, rid)
                except GatewayError as error:
                    answer = BackendAnswer(error.status, b"", JSON)
                finally:
                    shadow.count_out(request.row_count)
                self._record(rid, "shadow", shadow, user, time.perf_counter() - started, answer, None, None)

        self.tasks.spawn(run())

    def _record(
        self,
        rid: str,
        role: str,
        variant: Variant,
        user: str | None,
        seconds: float,
        answer: BackendAnswer,
        key: ApiKey | None,
        client_rid: str | None,
    ) -> None:
        """Queue the answer for the inference log (its writer parses the body, off the request path,
        unless the batcher parsed it already)."""
        self.log.record(
            Answer(
                rid,
                role,
                time.time(),
                variant.alias,
                variant.version,
                client_hash(user),
                round(seconds * 1000, 3),
                answer.status,
                answer.body,
                answer.predictions,
                key.name if key else None,
                client_rid,
                round(answer.backend_seconds * 1000, 3),
            )
        )

    def _meter(self, key: ApiKey | None, variant: Variant, images: int, compute: float) -> None:
        """A key's use of a variant, in ``/metrics`` (the inference log keeps the same per request)."""
        labels = (key.name if key else NO_KEY, variant.alias)
        usage = self._usage.get(labels)
        if usage is None:
            usage = self._usage[labels] = self.metrics.usage(*labels)
        usage.add(images, compute)

    def _variant_metrics(self, alias: str, version: str) -> VariantMetrics:
        cached = self._labelled.get((alias, version))
        if cached is None:
            cached = self._labelled[(alias, version)] = VariantMetrics(self.metrics, alias, version)
        return cached

    def _account(self, variant: Variant | None, key, ids: tuple[str, str | None], status: int, seconds: float) -> None:
        """Count the request and leave its access line; ``ids``: the gateway's and the client's."""
        alias = variant.alias if variant else "-"
        version = str(variant.version) if variant else "-"
        labelled = self._variant_metrics(alias, version)
        labelled.requests(status).inc()
        if variant is not None:
            labelled.latency.observe(seconds)
            variant.requests += 1
            if status >= 500:  # the model's or its server's failure; a client's bad request is not
                variant.errors += 1
        if status >= 400:
            self.metrics.errors.labels(alias, version, "client" if status < 500 else "server").inc()
        # A dict, not a string: the JSON is made by the log-writing thread, off the event loop.
        log_access(
            {
                "request_id": ids[0],
                "client_request_id": ids[1],
                "key": key.name if key else None,
                "variant": alias,
                "version": version,
                "status": status,
                "ms": round(seconds * 1000, 2),
            }
        )

    # --- feedback ------------------------------------------------------------------------------
    async def feedback(self, raw: RawRequest) -> tuple[int, dict]:
        """Record the true label of an earlier prediction: (status, JSON body). Only the key that
        asked for the prediction, or a ``labeler`` key, may label it, once."""
        key = authenticate(raw, self.keys, "predict")
        admitted = self._admit(key)
        try:
            body = await read_body(raw, FEEDBACK_BODY_LIMIT, self.settings.body_timeout)
            request_id_, row, label = _feedback_fields(body)
            labeller = Labeller(key.name, key.allows("labeler")) if key else Labeller(None, True)
            try:
                await asyncio.wrap_future(self.log.feedback(request_id_, row, label, labeller))
            except FeedbackError as error:
                code = FEEDBACK_CODES.get(error.status, "INTERNAL_ERROR")
                return error.status, {"error_code": code, "message": str(error)}
        finally:
            self.limits.release(admitted)
        return 200, {"recorded": True, "request_id": request_id_, "row": row, "label": label}

    async def close(self) -> None:
        """Wait for the shadow copies still in flight."""
        await self.tasks.wait()


def _feedback_fields(body: bytes) -> tuple[str, int, int]:
    """(request id, row, label) of a feedback body; ``BadRequest`` naming what is wrong."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadRequest(FEEDBACK_SHAPE) from None
    if not isinstance(payload, dict):
        raise BadRequest(FEEDBACK_SHAPE)
    rid, label, row = payload.get("request_id"), payload.get("label"), payload.get("row", 0)
    if not isinstance(rid, str) or not rid:
        raise BadRequest(f"request_id must be the X-Request-ID of an earlier prediction; {FEEDBACK_SHAPE}")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label <= 9:
        raise BadRequest(f"label must be a whole number from 0 to 9, got {label!r}")
    if not isinstance(row, int) or isinstance(row, bool) or row < 0:
        raise BadRequest(f"row must be a whole number >= 0 (the row of the request), got {row!r}")
    return rid, row, label
