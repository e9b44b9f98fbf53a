"""Adaptive micro-batching: concurrent requests for the same backend become one backend call.

A request that MLflow's protocol lets us merge (JSON ``dataframe_split``, no ``params``/``index``)
joins its variant's queue. The dispatcher sends a batch whenever the backend has a free slot:
an idle gateway sends a lone request at once (no added wait); under load the queue fills while
the backend works, so batches grow with the load, up to ``max_size`` rows. A request never waits
more than ``max_delay`` for a slot: past that, an extra batch goes out even though the backend is
busy (up to ``max_in_flight`` batches at once). Each client gets its own rows back, in MLflow's
response shape, with its own status.

One bad row fails only its own request: when the backend rejects a merged batch (4xx), the batch
is split in halves and each half retried, down to the single requests that are bad; those get
the backend's own error for their own rows, and everyone else their answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from serve.gateway.backend_http import BackendClient
from serve.gateway.backends import Backend
from serve.gateway.errors import GatewayError
from serve.gateway.proxy import JSON, BackendAnswer, backend_headers, forward


@dataclass(frozen=True)
class BatchSettings:
    max_size: int = 64  # rows per backend call
    max_delay: float = 0.010  # seconds a request may wait for a free backend slot
    slots: int = 1  # batches in flight per backend normally (its worker count)
    max_in_flight: int = 4  # hard cap, reached only by requests that waited max_delay


def mergeable(body: bytes, content_type: str | None) -> tuple[tuple, list, bytes] | None:
    """(columns, rows, body) of a request that can join a batch; None if it must go on its own."""
    if (content_type or JSON).split(";")[0].strip().lower() != JSON:
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or set(payload) != {"dataframe_split"}:
        return None
    split = payload["dataframe_split"]
    if not isinstance(split, dict) or set(split) != {"columns", "data"}:
        return None
    columns, data = split["columns"], split["data"]
    if not isinstance(columns, list) or not isinstance(data, list) or not data:
        return None
    if not all(isinstance(c, str) for c in columns) or not all(isinstance(r, list) for r in data):
        return None
    return tuple(columns), data, body


@dataclass
class Pending:
    columns: tuple
    rows: list
    body: bytes  # the client's own body: sent as it is when the request goes out alone
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
    observe_batch: Callable[[int, float], None] = lambda size, wait: None  # metrics: rows, seconds waited
    queue: deque = field(default_factory=deque)
    in_flight: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None

    async def submit(self, columns: tuple, rows: list, body: bytes, rid: str) -> BackendAnswer:
        if not self.queue and self.in_flight < self.settings.slots:
            # Idle backend, nobody waiting: this request is a batch of one, sent at once from the
            # caller's own task. The same call the dispatcher would make, minus its hops (a queue
            # entry, a future, two tasks): at concurrency 1 every request takes this path.
            self.observe_batch(len(rows), 0.0)
            self.in_flight += 1
            try:
                return await forward(self.client, self.current_backend(), body, backend_headers(rid), self.timeout)
            finally:
                self._finished()
        future = asyncio.get_running_loop().create_future()
        self.queue.append(Pending(columns, rows, body, rid, time.perf_counter(), future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._dispatch())
        self._wake.set()
        return await future

    def _may_send(self) -> bool:
        if not self.queue:
            return False
        if self.in_flight < self.settings.slots:
            return True
        waited = time.perf_counter() - self.queue[0].enqueued
        return waited >= self.settings.max_delay and self.in_flight < self.settings.max_in_flight

    async def _dispatch(self) -> None:
        while self.queue:
            while not self._may_send():
                self._wake.clear()
                wait = None
                if self.queue and self.in_flight < self.settings.max_in_flight:
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
        """Up to max_size rows of requests with the same columns, oldest first."""
        first = self.queue.popleft()
        batch, size, skipped = [first], len(first.rows), deque()
        while self.queue and size < self.settings.max_size:
            candidate = self.queue.popleft()
            if candidate.columns != first.columns or size + len(candidate.rows) > self.settings.max_size:
                skipped.append(candidate)
                continue
            batch.append(candidate)
            size += len(candidate.rows)
        self.queue.extendleft(reversed(skipped))
        now = time.perf_counter()
        self.observe_batch(size, now - first.enqueued)
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
            body = batch[0].body
        else:
            rows = [row for pending in batch for row in pending.rows]
            body = json.dumps({"dataframe_split": {"columns": list(batch[0].columns), "data": rows}}).encode()
        headers = backend_headers(batch[0].rid if len(batch) == 1 else f"batch-{batch[0].rid}")
        try:
            answer = await forward(self.client, self.current_backend(), body, headers, self.timeout)
        except GatewayError as error:
            for pending in batch:
                pending.future.set_exception(error)
            return
        if answer.status == 200:
            self._split(batch, answer)
        elif len(batch) == 1:
            batch[0].future.set_result(answer)
        else:  # one or more bad rows: find them by halving, answer the rest
            middle = len(batch) // 2
            await asyncio.gather(self._answer(batch[:middle]), self._answer(batch[middle:]))

    @staticmethod
    def _split(batch: list[Pending], answer: BackendAnswer) -> None:
        if len(batch) == 1:
            batch[0].future.set_result(answer)
            return
        predictions = json.loads(answer.body)["predictions"]
        start = 0
        for pending in batch:
            part = predictions[start : start + len(pending.rows)]
            start += len(pending.rows)
            pending.future.set_result(BackendAnswer(200, json.dumps({"predictions": part}).encode(), JSON))
