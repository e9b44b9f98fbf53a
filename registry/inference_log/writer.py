"""Writing the inference log off the request path, and never at the cost of serving.

The request handler only appends to an in-memory queue; one writer thread owns the database
connection and, every ``max_delay`` seconds, turns what has queued up into rows and commits them in
one transaction. It is not woken per record: a thread waking hundreds of times a second takes the
GIL from the event loop and shows up in every request's latency. Feedback goes through the same
queue, so it always sees the predictions logged before it.

When the database cannot be written (locked, unreachable, full, read-only), requests go on: rows
wait in memory, up to ``max_backlog``, and are written once it recovers; rows beyond that bound are
dropped and counted (``lost``, exported by the gateway as a metric) and logged as lost, never
silently. Feedback is answered 503 at once while the database is failing, instead of waiting for it.
``close()`` tries to write what is left for at most ``close_timeout`` seconds, so a stop (SIGTERM)
never hangs on a broken database; what it could not write is counted and logged.

Retention: with ``keep_days``, the writer deletes predictions and feedback older than that, at
start-up and then hourly, ``prune_batch`` rows per table per wake-up, so that new records never
wait behind a long delete (a first pass over a large old log takes many small steps).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from mnist_mlops.registry.inference_log.schema import (
    TABLES,
    create,
    database_url,
    engine_for,
    feedback,
    predictions,
    replica_time,
)

logger = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0  # seconds between retention passes
PRUNE_BATCH = 5000  # rows deleted per table and transaction
MAX_BACKLOG = 200_000  # rows kept in memory while the database cannot be written
RETRY_LIMIT = 5.0  # seconds between two attempts at most, while the database is failing
DAY = 86400.0


def client_hash(key: str | None) -> str | None:
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else None


@dataclass(frozen=True)
class Answer:
    """One answered request, as the handler enqueues it.

    ``predictions`` is the answer's rows when the caller has parsed them already (the
    micro-batching path splits a batch's answer); otherwise the writer parses ``body`` once, off
    the request path.
    """

    request_id: str
    role: str
    time: float
    variant: str
    model_version: str | None
    client_hash: str | None
    latency_ms: float
    status: int
    body: bytes = b""
    predictions: list | None = None
    key_name: str | None = None
    client_request_id: str | None = None
    compute_ms: float | None = None  # the backend's time charged to this request (``usage``)

    def rows(self) -> list[dict]:
        parsed = self.predictions
        if parsed is None and self.status == 200:
            parsed = _predictions(self.body)
        base = {
            "request_id": self.request_id,
            "role": self.role,
            "time": self.time,
            "variant": self.variant,
            "model_version": self.model_version,
            "client_hash": self.client_hash,
            "latency_ms": self.latency_ms,
            "status": self.status,
            "key_name": self.key_name,
            "client_request_id": self.client_request_id,
            "compute_ms": self.compute_ms,
        }
        if self.status != 200 or not parsed:
            return [base | {"row": 0, "label": None, "confidence": None}]
        return [
            base | {"row": row, "label": _int(p.get("label")), "confidence": _float(p.get("confidence"))}
            for row, p in enumerate(p if isinstance(p, dict) else {} for p in parsed)
        ]


def _predictions(body: bytes) -> list | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    found = payload.get("predictions") if isinstance(payload, dict) else None
    return found if isinstance(found, list) else None


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class FeedbackError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Labeller:
    """Who gives a label: a key name (None without keys) and whether it may label any prediction
    (a ``labeler`` or ``admin`` key) or only those it asked for."""

    name: str | None
    any_prediction: bool = False


@dataclass(frozen=True)
class _Feedback:
    request_id: str
    row: int
    label: int
    labeller: Labeller
    result: concurrent.futures.Future


@dataclass(frozen=True)
class _ReplicaTime:
    rows: list[dict]


@dataclass(frozen=True)
class _Flush:
    done: concurrent.futures.Future


def _insert_new(engine: Engine):
    """An INSERT that skips rows whose key is already logged: a record is never overwritten."""
    if engine.dialect.name == "sqlite":
        return sqlite.insert(predictions).on_conflict_do_nothing()
    if engine.dialect.name == "postgresql":
        return postgresql.insert(predictions).on_conflict_do_nothing()
    return insert(predictions)


class InferenceLog:
    """Batched, off-path writes; thread-safe ``record``, ``feedback``, ``flush`` and ``close``."""

    def __init__(
        self,
        location: str | Path,
        max_delay: float = 0.2,
        busy_timeout: float = 5.0,
        keep_days: float = 0.0,
        prune_batch: int = PRUNE_BATCH,
        max_backlog: int = MAX_BACKLOG,
        close_timeout: float = 5.0,
    ) -> None:
        """``location``: a database URL or a SQLite file; ``keep_days``: how long records are
        kept (0: for ever). The tables are created (or upgraded) now: a bad location fails at
        start-up."""
        self.url = database_url(location)
        self.max_delay = max_delay
        self.keep_days, self.prune_batch = keep_days, prune_batch
        self.max_backlog, self.close_timeout = max_backlog, close_timeout
        self._engine = engine_for(self.url, busy_timeout)
        create(self._engine)
        self._insert = _insert_new(self._engine)
        self._pruned = {table.name: 0 for table in TABLES}  # rows deleted by the retention pass under way
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._urgent = threading.Event()  # feedback, flush and close wake the writer at once
        self._closed = False
        self._deadline: float | None = None  # set by close(): the writer gives up after it
        self._backlog: list[dict] = []  # rows waiting for the database to come back
        self._replica_backlog: list[dict] = []  # replica-seconds waiting for it
        self._failing_since: float | None = None
        self._next_attempt = 0.0
        self.written = 0
        self.lost = 0  # rows dropped: over the backlog's bound, or left when close() gave up
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    @property
    def failing(self) -> bool:
        """Whether the last attempt to write the database failed."""
        return self._failing_since is not None

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    # --- called from the event loop ----------------------------------------------------------
    def record(self, answer: Answer) -> None:
        self._queue.put(answer)

    def feedback(
        self, request_id: str, row: int, label: int, labeller: Labeller | None = None
    ) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self.failing:  # no waiting on a database that is down: the client may retry
            future.set_exception(FeedbackError(503, "the inference log cannot be written right now; retry later"))
            return future
        self._queue.put(_Feedback(request_id, row, label, labeller or Labeller(None, True), future))
        self._urgent.set()
        return future

    def record_replica_time(self, rows: list[dict]) -> None:
        """Replica-seconds held: rows of ``schema.replica_time`` (gateway, variant, model_version,
        start, time, seconds)."""
        if rows:
            self._queue.put(_ReplicaTime(rows))

    def flush(self) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Flush(future))
        self._urgent.set()
        return future

    def close(self) -> None:
        """Write what is queued (for at most ``close_timeout`` seconds), then stop the writer."""
        if self._closed:
            return
        self._closed = True
        self._deadline = time.monotonic() + self.close_timeout
        self._queue.put(None)
        self._urgent.set()
        self._thread.join(self.close_timeout + 5)
        self._engine.dispose()

    # --- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        next_prune = time.monotonic()
        while True:
            self._urgent.wait(self.max_delay)
            self._urgent.clear()
            if self.keep_days and time.monotonic() >= next_prune and not self.failing:
                next_prune = time.monotonic() + self._prune_step()
            if not self._drain():
                return

    def _drain(self) -> bool:
        """Store everything queued, in order; False once ``close`` was asked for and done."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                self._write()
                return True
            if isinstance(item, Answer):
                self._hold(item.rows())
                continue
            self._write()  # commands see every prediction queued before them
            if item is None:
                self._finish()
                return False
            try:
                if isinstance(item, _Feedback):
                    self._store_feedback(item)
                elif isinstance(item, _ReplicaTime):
                    self._store_replica_time(item.rows)
                elif isinstance(item, _Flush):
                    item.done.set_result(not self._backlog)
            except Exception:  # a failed command must not stop the writer
                logger.exception("inference log command failed")

    def _hold(self, rows: list[dict]) -> None:
        room = self.max_backlog - len(self._backlog)
        if len(rows) > room:
            self._lose(len(rows) - room, f"more than {self.max_backlog:,} rows wait for the database")
            rows = rows[: max(room, 0)]
        self._backlog += rows

    def _write(self) -> None:
        """Write the backlog in one transaction; on failure keep it, and try again later (backing
        off up to RETRY_LIMIT seconds) unless close() is past its deadline."""
        if not self._backlog or time.monotonic() < self._next_attempt:
            return
        try:
            with self._engine.begin() as connection:
                connection.execute(self._insert, self._backlog)
        except SQLAlchemyError as exc:
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
                logger.error(
                    "inference log: cannot write %d rows (%s); requests go on, rows wait in memory (up to %s)",
                    len(self._backlog),
                    _one_line(exc),
                    f"{self.max_backlog:,}",
                )
            self._next_attempt = now + min(RETRY_LIMIT, 0.1 * 2 ** min(10, (now - self._failing_since) / 2))
            return
        self.written += len(self._backlog)
        if self._failing_since is not None:
            logger.warning("inference log: writing again after %.0f s", time.monotonic() - self._failing_since)
            self._failing_since, self._next_attempt = None, 0.0
        self._backlog = []

    def _finish(self) -> None:
        """close(): keep trying the backlog until the deadline, then count what is left as lost."""
        while self._backlog and time.monotonic() < (self._deadline or 0):
            self._next_attempt = 0.0
            self._write()
            if self._backlog:
                time.sleep(0.2)
        if self._backlog:
            self._lose(len(self._backlog), "the gateway stopped while the database could not be written")
            self._backlog = []
        if self._replica_backlog:
            logger.error("inference log: %d replica-seconds rows lost at stop", len(self._replica_backlog))

    def _lose(self, rows: int, why: str) -> None:
        self.lost += rows
        logger.error("inference log: %d rows lost (%s); %d lost since start", rows, why, self.lost)

    def _prune_step(self) -> float:
        """Delete up to ``prune_batch`` expired rows from each table; the seconds until the next
        step (none while a pass has rows left, an hour once it is done)."""
        cutoff = time.time() - self.keep_days * DAY
        try:
            left = False
            for table in TABLES:
                key = tuple_(*table.primary_key.columns)
                oldest = select(*table.primary_key.columns).where(table.c.time < cutoff).limit(self.prune_batch)
                with self._engine.begin() as connection:
                    deleted = connection.execute(delete(table).where(key.in_(oldest))).rowcount
                self._pruned[table.name] += deleted
                left |= deleted == self.prune_batch
        except SQLAlchemyError as exc:  # busy, or the disk: the records matter more; try again later
            logger.warning("inference log: retention pass failed (%s); retrying in a minute", _one_line(exc))
            return 60.0
        if left:
            return 0.0
        if any(self._pruned.values()):
            logger.info(
                "inference log: deleted %d predictions and %d feedback older than %g days",
                self._pruned["predictions"],
                self._pruned["feedback"],
                self.keep_days,
            )
            self._pruned = dict.fromkeys(self._pruned, 0)
        return PRUNE_EVERY

    def _store_replica_time(self, rows: list[dict]) -> None:
        """Kept in memory (bounded) while the database fails, and written with the next rows; no
        attempt while it is failing (a stop must not wait on a database that is down)."""
        self._replica_backlog = (self._replica_backlog + rows)[-self.max_backlog :]
        if self.failing:
            return
        try:
            with self._engine.begin() as connection:
                connection.execute(insert(replica_time), self._replica_backlog)
        except SQLAlchemyError as exc:
            logger.warning("inference log: replica-seconds not written yet (%s); kept for the next try", _one_line(exc))
            return
        self._replica_backlog = []

    def _store_feedback(self, item: _Feedback) -> None:
        if self._backlog:  # the prediction may be among the rows that wait: no wrong 404
            item.result.set_exception(FeedbackError(503, "the inference log cannot be written right now; retry later"))
            return
        try:
            with self._engine.begin() as connection:
                _check_labeller(connection, item)
                row = {
                    "request_id": item.request_id,
                    "row": item.row,
                    "label": item.label,
                    "time": time.time(),
                    "key_name": item.labeller.name,
                }
                connection.execute(insert(feedback).values(**row))
            item.result.set_result(True)
        except FeedbackError as exc:
            item.result.set_exception(exc)
        except IntegrityError:
            item.result.set_exception(
                FeedbackError(409, f"feedback for request_id {item.request_id!r} row {item.row} was already recorded")
            )
        except SQLAlchemyError as exc:
            item.result.set_exception(FeedbackError(503, f"the inference log is unavailable: {_one_line(exc)}"))


def _check_labeller(connection, item: _Feedback) -> None:
    """Feedback joins a prediction the client was answered with (role 'serve', status 200), from
    the key that asked for it or from one that may label any prediction."""
    owner = connection.execute(
        select(predictions.c.key_name).where(
            predictions.c.request_id == item.request_id,
            predictions.c.row == item.row,
            predictions.c.role == "serve",
            predictions.c.status == 200,
        )
    ).first()
    if owner is None:
        raise FeedbackError(404, f"no logged prediction has request_id {item.request_id!r} and row {item.row}")
    labeller = item.labeller
    if not labeller.any_prediction and owner.key_name != labeller.name:
        raise FeedbackError(
            403,
            f"the prediction {item.request_id!r} was asked for with another key; only that key, or a key "
            "with the labeler role, may label it",
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
