"""Logging for the gateway process: lines are formatted and written by a background thread that
wakes a few times a second, never once per request; the event loop only appends a record.

Access records are dicts (one JSON line each); everything else is a plain log line. The access
line of each scoring request skips ``logging``'s record machinery while the batched handler is
installed (:func:`log_access`): a LogRecord costs more than the rest of the line's bookkeeping.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import sys
import threading
import time

FLUSH_SECONDS = 0.1
ACCESS_LOGGER = "mnist.gateway.access"

_installed: BatchedStreamHandler | None = None
_access_logger = logging.getLogger(ACCESS_LOGGER)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):
            record = logging.makeLogRecord(record.__dict__ | {"msg": json.dumps(record.msg), "args": None})
        return super().format(record)


class BatchedStreamHandler(logging.Handler):
    """``emit`` appends to a deque; a daemon thread formats and writes every FLUSH_SECONDS."""

    def __init__(self, stream=None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.records: collections.deque = collections.deque()
        self.setFormatter(_Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def access(self, entry: dict) -> None:
        """Queue one access line; formatted by the writer like a record of ACCESS_LOGGER at INFO."""
        self.records.append((time.time(), entry))

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        lines = []
        while self.records:
            try:
                record = self.records.popleft()
                if isinstance(record, tuple):
                    created, entry = record
                    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, "", 0, entry, None, None)
                    record.created, record.msecs = created, (created % 1) * 1000
                lines.append(self.format(record))
            except Exception:  # a record that cannot be formatted is dropped, not the logger
                continue
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()


def log_access(entry: dict) -> None:
    """One access line: straight to the batched handler when it is installed, else via ``logging``.

    The access logger's level is honoured either way (set it to WARNING to silence access lines).
    """
    if not _access_logger.isEnabledFor(logging.INFO):
        return
    if _installed is not None:
        _installed.access(entry)
    else:
        _access_logger.info(entry)


def setup_logging() -> BatchedStreamHandler:
    global _installed
    handler = _installed = BatchedStreamHandler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("mlflow", "alembic", "httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
