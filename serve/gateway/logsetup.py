"""Logging for the gateway process: lines are formatted and written by a background thread that
wakes a few times a second, never once per request; the event loop only appends a record.

Access records are dicts (one JSON line each); everything else is a plain log line.
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

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        lines = []
        while self.records:
            try:
                lines.append(self.format(self.records.popleft()))
            except Exception:  # a record that cannot be formatted is dropped, not the logger
                continue
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()


def setup_logging() -> BatchedStreamHandler:
    handler = BatchedStreamHandler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("mlflow", "alembic", "httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
