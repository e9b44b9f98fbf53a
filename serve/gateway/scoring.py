"""The data plane: one scoring request through a fixed pipeline, and feedback on an earlier one.

    authenticate -> read the body -> parse it once -> choose a variant (``routing``, pure)
    -> send (micro-batched, or on its own) -> answer -> record (inference log, metrics, access line)

Every stage's failure is a ``GatewayError`` carrying its status; the pipeline turns it into the
answer. The data plane reads the table of variants and never changes it: starting backends,
following the registry and deciding the A/B test are the control plane's (``control``).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

from starlette.requests import ClientDisconnect

from mnist_mlops.common.names import CHAMPION
from mnist_mlops.registry.inference_log.writer import Answer, FeedbackError, InferenceLog, client_hash
from mnist_mlops.serve.gateway import routing
from mnist_mlops.serve.gateway.access_log import log_access
from mnist_mlops.serve.gateway.auth import KeyRing
from mnist_mlops.serve.gateway.backend_http import BackendClient
from mnist_mlops.serve.gateway.batching import Batcher, BatchSettings
from mnist_mlops.serve.gateway.errors import BadRequest, GatewayError, Unavailable
from mnist_mlops.serve.gateway.forwarding import BackendAnswer, backend_headers, forward
from mnist_mlops.serve.gateway.metrics import GatewayMetrics, VariantMetrics
from mnist_mlops.serve.gateway.protocol import JSON, ScoringRequest, parse
from mnist_mlops.serve.gateway.requests import RawRequest, authenticate, read_body, request_id
from mnist_mlops.serve.gateway.state import Table, Variant
from mnist_mlops.serve.gateway.tasks import TaskSet

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer; logged, never sent
MAX_SHADOW_IN_FLIGHT = 64
FEEDBACK_BODY_LIMIT = 64 * 1024
FEEDBACK_SHAPE = 'expected a JSON object like {"request_id": "<X-Request-ID of the prediction>", "label": 3}'
FEEDBACK_CODES = {404: "RESOURCE_DOES_NOT_EXIST", 409: "RESOURCE_ALREADY_EXISTS", 503: "TEMPORARILY_UNAVAILABLE"}


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
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.table = table
        self.metrics = metrics
        self.log = log
        self.client = client
        self.rng = random.Random()
        self.shadow_slots = asyncio.Semaphore(MAX_SHADOW_IN_FLIGHT)
        self._labelled: dict[tuple[str, str], VariantMetrics] = {}
        self.tasks = TaskSet()

    # --- scoring -------------------------------------------------------------------------------
    async def score(self, raw: RawRequest) -> Reply | None:
        """Answer one scoring request; always leaves one access-log line.

        None when the client went away before its body was read (nobody to answer).
        """
        started = time.perf_counter()
        rid = request_id(raw)
        key, variant, status = None, None, 500
        user = raw.headers.get("x-user-id")
        try:
            key = authenticate(raw, self.keys, "predict")
            request = parse(await read_body(raw, self.settings.max_body_bytes), raw.headers.get("content-type"))
            variant = routing.choose(self.table, user, self.rng)
            answer, variant = await self._answer(variant, request, rid)
            status = answer.status
            self._record(rid, "serve", variant, user, time.perf_counter() - started, answer)
            if self.settings.shadow and variant.alias == CHAMPION and status == 200:
                self._shadow(request, rid, user)
            headers = {"x-model-version": str(variant.version), "x-variant": variant.alias, "x-request-id": rid}
            return Reply(status, answer.body, answer.content_type, headers)
        except GatewayError as error:
            status = error.status
            headers = {"X-Request-ID": rid}
            if variant is not None:
                headers |= {"X-Variant": variant.alias, "X-Model-Version": str(variant.version)}
                failed = BackendAnswer(status, b"", JSON)
                self._record(rid, "serve", variant, user, time.perf_counter() - started, failed)
            return Reply.error(error, headers)
        except ClientDisconnect:
            status = CLIENT_CLOSED_REQUEST
            return None
        finally:
            self._account(variant, key, rid, status, time.perf_counter() - started)

    async def _answer(self, variant: Variant, request: ScoringRequest, rid: str) -> tuple[BackendAnswer, Variant]:
        """The variant's answer; when its backend cannot be reached, the champion's (never the
        other way round: ``routing.fallback``)."""
        try:
            return await self._send(variant, request, rid), variant
        except Unavailable:
            stand_in = routing.fallback(self.table, variant)
            if stand_in is None:
                raise
            return await self._send(stand_in, request, rid, batch=False), stand_in

    async def _send(self, variant: Variant, request: ScoringRequest, rid: str, batch: bool = True) -> BackendAnswer:
        """Through the variant's micro-batcher when the request can be merged, else on its own."""
        if batch and self.settings.batching is not None and request.mergeable:
            return await self._batcher(variant).submit(request, rid)
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
                observe_batch=lambda rows, wait: (rows_seen.observe(rows), waits_seen.observe(wait)),
            )
        return variant.batcher

    def _shadow(self, request: ScoringRequest, rid: str, user: str | None) -> None:
        """Send a copy to the shadow alias off the response path; drop it when too many are pending.

        The copy takes the path a live request to that alias would take, its micro-batcher
        included, so the latency logged for it is the one it would serve with.
        """
        shadow = self.table.get(self.settings.shadow)
        if shadow is None or not shadow.ready or self.shadow_slots.locked():
            self.metrics.rejected.labels("shadow_skipped").inc()
            return

        async def run() -> None:
            async with self.shadow_slots:
                started = time.perf_counter()
                try:
                    answer = await self._send(shadow, request, rid)
                except GatewayError as error:
                    answer = BackendAnswer(error.status, b"", JSON)
                self._record(rid, "shadow", shadow, user, time.perf_counter() - started, answer)

        self.tasks.spawn(run())

    def _record(
        self, rid: str, role: str, variant: Variant, user: str | None, seconds: float, answer: BackendAnswer
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
            )
        )

    def _variant_metrics(self, alias: str, version: str) -> VariantMetrics:
        cached = self._labelled.get((alias, version))
        if cached is None:
            cached = self._labelled[(alias, version)] = VariantMetrics(self.metrics, alias, version)
        return cached

    def _account(self, variant: Variant | None, key, rid: str, status: int, seconds: float) -> None:
        alias = variant.alias if variant else "-"
        version = str(variant.version) if variant else "-"
        labelled = self._variant_metrics(alias, version)
        labelled.requests(status).inc()
        if variant is not None:
            labelled.latency.observe(seconds)
            variant.requests += 1
            if status >= 400:
                variant.errors += 1
        if status >= 400:
            self.metrics.errors.labels(alias, version, "client" if status < 500 else "server").inc()
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

    # --- feedback ------------------------------------------------------------------------------
    async def feedback(self, raw: RawRequest) -> tuple[int, dict]:
        """Record the true label of an earlier prediction: (status, JSON body)."""
        authenticate(raw, self.keys, "predict")
        request_id_, row, label = _feedback_fields(await read_body(raw, FEEDBACK_BODY_LIMIT))
        try:
            await asyncio.wrap_future(self.log.feedback(request_id_, row, label))
        except FeedbackError as error:
            code = FEEDBACK_CODES.get(error.status, "INTERNAL_ERROR")
            return error.status, {"error_code": code, "message": str(error)}
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
