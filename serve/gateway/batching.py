"""Adaptive micro-batching: concurrent requests for the same backend become one backend call.

A request that MLflow's protocol lets us merge (``protocol.ScoringRequest.mergeable``) joins its
variant's queue. The dispatcher sends a batch whenever the backend has a free slot: an idle gateway
sends a lone request at once (no added wait); under load the queue fills while the backend works,
so batches grow with the load, up to ``max_size`` rows. A request never waits more than
``max_delay`` for a slot: past that, an extra batch goes out even though the backend is busy (up
to ``max_in_flight`` batches at once). Once ``pipeline_rows`` rows are queued (or a request fills
a batch by itself), they do not wait for a free slot either: they go out as a second batch to the
busy backend, which reads it the moment it finishes the one before instead of a round trip later.
Each client gets its own rows back, in MLflow's response shape, with its own status.

One bad row fails only its own request: when the backend rejects a merged batch (4xx), the batch
is split in halves and each half retried, down to the single requests that are bad; those get the
backend's own error for their own rows, and everyone else their answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mnist_mlops.serve.gateway.backend_http import BackendClient
from mnist_mlops.serve.gateway.errors import BadGateway, GatewayError
from mnist_mlops.serve.gateway.forwarding import BackendAnswer, backend_headers, forward
from mnist_mlops.serve.gateway.protocol import JSON, ScoringRequest, merged_body, predictions_body, predictions_of
from mnist_mlops.serve.gateway.state import Backend


@dataclass(frozen=True)
class BatchSettings:
    max_size: int = 64  # rows per backend call
    max_bytes: int = 1024 * 1024  # request bytes per backend call (the model bounds a call's decoding)
    max_delay: float = 0.010  # seconds a request may wait for a free backend slot
    slots: int = 1  # batches in flight per backend normally (its worker count)
    max_in_flight: int = 4  # hard cap, reached only by requests that waited max_delay
    # Queued rows that go to a busy backend as its next batch without waiting for a slot (at most
    # max_size): enough to be worth a call, and the backend need not wait a round trip for them.
    pipeline_rows: int = 8


@dataclass
class Pending:
    request: ScoringRequest
    rid: str
    enqueued: float
    future: asyncio.Future


@dataclass
class Batcher:
    """The queue and dispatcher of one variant's backend."""

    client: BackendClient
    settings: BatchSettings
    timeout: float
    current_backend: Callable[[], Backend]  # read at send time: an alias may have moved meanwhile
    replicas: Callable[[], int] = lambda: 1  # backends behind the variant: each has its slots
    observe_batch: Callable[[int, float], None] = lambda size, wait: None  # metrics: rows, seconds waited
    queue: deque = field(default_factory=deque)
    queued_rows: int = 0  # rows of the requests in ``queue``
    in_flight: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None

    async def submit(self, request: ScoringRequest, rid: str) -> BackendAnswer:
        if not self.queue and self.in_flight < self._slots():
            # Idle backend, nobody waiting: this request is a batch of one, sent at once from the
            # caller's own task. The same call the dispatcher would make, minus its hops (a queue
            # entry, a future, two tasks): at concurrency 1 every request takes this path.
            self.observe_batch(len(request.rows), 0.0)
            self.in_flight += 1
            try:
                return await forward(
                    self.client, self.current_backend(), request.body, backend_headers(rid), self.timeout
                )
            finally:
                self._finished()
        future = asyncio.get_running_loop().create_future()
        self.queue.append(Pending(request, rid, time.perf_counter(), future))
        self.queued_rows += len(request.rows)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._dispatch())
        self._wake.set()
        return await future

    async def send_alone(self, request: ScoringRequest, rid: str) -> BackendAnswer:
        """A request that cannot be merged (a large body, not a ``dataframe_split``), sent at once
        and on its own, but holding a slot as a batch would: merged requests queue behind it
        instead of crowding a backend that is busy with it."""
        self.in_flight += 1
        try:
            return await forward(
                self.client,
                self.current_backend(),
                request.body,
                backend_headers(rid, request.content_type),
                self.timeout,
            )
        finally:
            self._finished()

    def _may_send(self) -> bool:
        if not self.queue:
            return False
        if self.in_flight < self._slots():
            return True
        enough = min(self.settings.pipeline_rows, self.settings.max_size)
        if self.in_flight < 2 * self._slots() and self.queued_rows >= enough:
            # A batch worth its call gains nothing by waiting: queued at its busy backend, it
            # starts the moment the batch before it ends, instead of a round trip later.
            return True
        waited = time.perf_counter() - self.queue[0].enqueued
        return waited >= self.settings.max_delay and self.in_flight < self._max_in_flight()

    def _slots(self) -> int:
        return self.settings.slots * max(1, self.replicas())

    def _max_in_flight(self) -> int:
        return self.settings.max_in_flight * max(1, self.replicas())

    async def _dispatch(self) -> None:
        while self.queue:
            while not self._may_send():
                self._wake.clear()
                wait = None
                if self.queue and self.in_flight < self._max_in_flight():
                    wait = max(0.0, self.settings.max_delay - (time.perf_counter() - self.queue[0].enqueued))
                with contextlib.suppress(TimeoutError):  # max_delay passed: look again
                    await asyncio.wait_for(self._wake.wait(), wait)
                if not self.queue:
                    return
            batch = self._take()
            self.in_flight += 1
            task = asyncio.create_task(self._send(batch))
            task.add_done_callback(lambda _: self._finished())

    def _finished(self) -> None:
        self.in_flight -= 1
        self._wake.set()

    def _take(self) -> list[Pending]:
        """Up to max_size rows (and max_bytes) of requests with the same columns, oldest first."""
        first = self.queue.popleft()
        columns = first.request.columns
        batch, size, skipped = [first], len(first.request.rows), deque()
        total_bytes = len(first.request.body)
        while self.queue and size < self.settings.max_size:
            candidate = self.queue.popleft()
            rows, length = len(candidate.request.rows), len(candidate.request.body)
            too_big = size + rows > self.settings.max_size or total_bytes + length > self.settings.max_bytes
            if candidate.request.columns != columns or too_big:
                skipped.append(candidate)
                continue
            batch.append(candidate)
            size += rows
            total_bytes += length
        self.queue.extendleft(reversed(skipped))
        self.queued_rows -= size
        self.observe_batch(size, time.perf_counter() - first.enqueued)
        return batch

    async def _send(self, batch: list[Pending]) -> None:
        try:
            await self._answer(batch)
        except Exception as exc:  # never leave a client waiting
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)

    async def _answer(self, batch: list[Pending]) -> None:
        if len(batch) == 1:  # alone: the client's bytes, untouched
            body = batch[0].request.body
        else:
            body = merged_body(batch[0].request.columns, [row for p in batch for row in p.request.rows])
        headers = backend_headers(batch[0].rid if len(batch) == 1 else f"batch-{batch[0].rid}")
        try:
            answer = await forward(self.client, self.current_backend(), body, headers, self.timeout)
        except GatewayError as error:
            for pending in batch:
                pending.future.set_exception(error)
            return
        if answer.status == 200:
            _split(batch, answer)
        elif len(batch) == 1:
            batch[0].future.set_result(answer)
        else:  # one or more bad rows: find them by halving, answer the rest
            middle = len(batch) // 2
            await asyncio.gather(self._answer(batch[:middle]), self._answer(batch[middle:]))


def _split(batch: list[Pending], answer: BackendAnswer) -> None:
    """Hand each client its own rows of a batch's answer (parsed here, once)."""
    if len(batch) == 1:
        batch[0].future.set_result(answer)
        return
    try:
        predictions = predictions_of(answer.body)
    except ValueError:
        error = BadGateway("the model backend answered a batch without its predictions")
        for pending in batch:
            pending.future.set_exception(error)
        return
    start, rows = 0, max(1, len(predictions))
    for pending in batch:
        part = predictions[start : start + len(pending.request.rows)]
        start += len(pending.request.rows)
        share = answer.backend_seconds * len(part) / rows  # each client pays for its own rows
        pending.future.set_result(BackendAnswer(200, predictions_body(part), JSON, part, share))
