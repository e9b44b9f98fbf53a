"""The inference log: every prediction the gateway returns, and the feedback that joins it.

Written off the request path: the request handler only appends to an in-memory queue; one writer
thread owns the SQLite connection (WAL mode) and, every ``max_delay`` seconds, parses what has
queued up and commits it in one transaction. It is not woken per record: a thread waking hundreds
of times a second takes the GIL from the event loop and shows up in every request's latency. A
store that is briefly locked delays a batch (it is retried, never dropped); ``close()`` drains the
queue, so a graceful shutdown (SIGTERM, SIGINT) loses no accepted prediction. Feedback goes
through the same queue, so it always sees the predictions logged before it.

Retention: with ``keep_days``, the writer deletes predictions and feedback older than that, at
start-up and then hourly, ``prune_batch`` rows per table per wake-up, so that new records never
wait behind a long delete (a first pass over a large old log takes many small steps).

Schema (query it with any SQLite client; times are Unix seconds, UTC)::

    predictions(request_id, row, role, time, variant, model_version, client_hash, label,
                confidence, latency_ms, status)   -- primary key (request_id, role, row)
        role: 'serve' (the answer the client got) or 'shadow' (the challenger's shadow answer);
        row: the row's position in the request; label/confidence NULL when status is not 200;
        client_hash: first 16 hex digits of sha256(X-User-ID), NULL without one.
    feedback(request_id, row, label, time)        -- primary key (request_id, row)
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    role TEXT NOT NULL,
    time REAL NOT NULL,
    variant TEXT NOT NULL,
    model_version TEXT,
    client_hash TEXT,
    label INTEGER,
    confidence REAL,
    latency_ms REAL,
    status INTEGER NOT NULL,
    PRIMARY KEY (request_id, role, row)
);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    label INTEGER NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (request_id, row)
);
CREATE INDEX IF NOT EXISTS feedback_time ON feedback (time);
"""
TABLES = ("predictions", "feedback")
PRUNE_EVERY = 3600.0  # seconds between retention passes
PRUNE_BATCH = 5000  # rows deleted per table and transaction
DAY = 86400.0


def client_hash(key: str | None) -> str | None:
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else None


@dataclass(frozen=True)
class Answer:
    """One answered request, as the handler enqueues it (the body is parsed by the writer)."""

    request_id: str
    role: str
    time: float
    variant: str
    model_version: str | None
    client_hash: str | None
    latency_ms: float
    status: int
    body: bytes

    def rows(self) -> list[tuple]:
        predictions = _predictions(self.body) if self.status == 200 else None
        base = (self.request_id, self.role, self.time, self.variant, self.model_version, self.client_hash)
        if not predictions:
            return [(base[0], 0, *base[1:], None, None, self.latency_ms, self.status)]
        return [
            (
                base[0],
                row,
                *base[1:],
                _int(p.get("label")),
                _float(p.get("confidence")),
                self.latency_ms,
                self.status,
            )
            for row, p in enumerate(predictions)
        ]


def _predictions(body: bytes) -> list[dict] | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    return [p if isinstance(p, dict) else {} for p in predictions] if isinstance(predictions, list) else None


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class FeedbackError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Feedback:
    request_id: str
    row: int
    label: int
    result: concurrent.futures.Future


@dataclass(frozen=True)
class _Flush:
    done: concurrent.futures.Future


class InferenceLog:
    """Batched, off-path writes to SQLite; thread-safe ``record``, ``feedback`` and ``close``."""

    def __init__(
        self,
        path: Path,
        max_delay: float = 0.2,
        busy_timeout: float = 5.0,
        keep_days: float = 0.0,
        prune_batch: int = PRUNE_BATCH,
    ) -> None:
        """``keep_days``: how long records are kept (0: for ever); see the module's docstring."""
        self.path = Path(path)
        self.max_delay, self.busy_timeout = max_delay, busy_timeout
        self.keep_days, self.prune_batch = keep_days, prune_batch
        self._pruned = dict.fromkeys(TABLES, 0)  # rows deleted by the retention pass under way
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._urgent = threading.Event()  # feedback, flush and close wake the writer at once
        self._closed = False
        self.written = 0
        connection = self._connect()  # create the schema now: a bad path fails at start-up, not later
        connection.close()
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
        return connection

    # --- called from the event loop ----------------------------------------------------------
    def record(self, answer: Answer) -> None:
        self._queue.put(answer)

    def feedback(self, request_id: str, row: int, label: int) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Feedback(request_id, row, label, future))
        self._urgent.set()
        return future

    def flush(self) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Flush(future))
        self._urgent.set()
        return future

    def close(self, timeout: float = 60.0) -> None:
        """Write everything queued so far, then stop the writer."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._urgent.set()
        self._thread.join(timeout)

    # --- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        connection = self._connect()
        next_prune = time.monotonic()
        while True:
            self._urgent.wait(self.max_delay)
            self._urgent.clear()
            if self.keep_days and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + self._prune_step(connection)
            if not self._drain(connection):
                connection.close()
                return

    def _prune_step(self, connection: sqlite3.Connection) -> float:
        """Delete up to ``prune_batch`` expired rows from each table; the seconds until the next
        step (none while a pass has rows left, an hour once it is done)."""
        cutoff = time.time() - self.keep_days * DAY
        try:
            left = False
            for table in TABLES:
                with connection:
                    deleted = connection.execute(
                        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE time < ? LIMIT ?)",
                        (cutoff, self.prune_batch),
                    ).rowcount
                self._pruned[table] += deleted
                left |= deleted == self.prune_batch
        except sqlite3.Error as exc:  # busy, or the disk: the records matter more; try again later
            logger.warning("inference log: retention pass failed (%s); retrying in a minute", exc)
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
            self._pruned = dict.fromkeys(TABLES, 0)
        return PRUNE_EVERY

    def _drain(self, connection: sqlite3.Connection) -> bool:
        """Store everything queued, in order; False once ``close`` was asked for."""
        pending: list[tuple] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                self._write(connection, pending)
                return True
            if isinstance(item, Answer):
                pending += item.rows()
                continue
            self._write(connection, pending)  # commands see every prediction queued before them
            pending = []
            if item is None:
                return False
            try:
                if isinstance(item, _Feedback):
                    self._store_feedback(connection, item)
                elif isinstance(item, _Flush):
                    item.done.set_result(True)
            except Exception:  # a failed command must not stop the writer
                logger.exception("inference log command failed")

    def _write(self, connection: sqlite3.Connection, rows: list[tuple]) -> None:
        if not rows:
            return
        delay = 0.05
        while True:
            try:
                with connection:
                    connection.executemany(
                        "INSERT OR REPLACE INTO predictions (request_id, row, role, time, variant, model_version, "
                        "client_hash, label, confidence, latency_ms, status) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        rows,
                    )
                self.written += len(rows)
                return
            except sqlite3.OperationalError as exc:  # locked or busy beyond busy_timeout: keep the rows, retry
                logger.warning("inference log busy (%s); retrying %d rows", exc, len(rows))
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _store_feedback(self, connection: sqlite3.Connection, item: _Feedback) -> None:
        try:
            known = connection.execute(
                "SELECT 1 FROM predictions WHERE request_id = ? AND row = ? AND role = 'serve' AND status = 200",
                (item.request_id, item.row),
            ).fetchone()
            if known is None:
                raise FeedbackError(404, f"no logged prediction has request_id {item.request_id!r} and row {item.row}")
            try:
                with connection:
                    connection.execute(
                        "INSERT INTO feedback (request_id, row, label, time) VALUES (?,?,?,?)",
                        (item.request_id, item.row, item.label, time.time()),
                    )
            except sqlite3.IntegrityError:
                raise FeedbackError(
                    409, f"feedback for request_id {item.request_id!r} row {item.row} was already recorded"
                ) from None
            item.result.set_result(True)
        except FeedbackError as exc:
            item.result.set_exception(exc)
        except sqlite3.Error as exc:
            item.result.set_exception(FeedbackError(503, f"the inference log is unavailable: {exc}"))
