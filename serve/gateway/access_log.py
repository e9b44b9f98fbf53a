"""Logging for the gateway process, off the event loop: the standard library's ``QueueHandler`` and
``QueueListener``, so the loop only appends a record and a thread formats and writes it.

Access records carry a dict (one JSON line each, with request id, key name, variant, version,
status and milliseconds); everything else is a plain log line. Python's ``QueueHandler`` formats
each record before queueing it, on the caller's thread; ``DeferredQueueHandler`` leaves that to the
listener's thread, which formats it anyway.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys

ACCESS_LOGGER = "mnist.gateway.access"
_access_logger = logging.getLogger(ACCESS_LOGGER)


class JsonDictFormatter(logging.Formatter):
    """The usual line format; a record whose message is a dict is written as that dict's JSON."""

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):
            record = logging.makeLogRecord(record.__dict__ | {"msg": json.dumps(record.msg), "args": None})
        return super().format(record)


class DeferredQueueHandler(logging.handlers.QueueHandler):
    """A ``QueueHandler`` that queues the record as it is: formatting happens in the listener.

    (The records never leave this process, so nothing needs them pre-formatted or picklable.)
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def log_access(entry: dict) -> None:
    """One access line (the access logger's level is honoured: WARNING silences them)."""
    if _access_logger.isEnabledFor(logging.INFO):
        _access_logger.info(entry)


def setup_logging(stream=None) -> logging.handlers.QueueListener:
    """Route every log record of this process through a queue to a thread that writes ``stream``
    (stderr by default); the listener is stopped, and the queue drained, at exit."""
    writer = logging.StreamHandler(stream or sys.stderr)
    writer.setFormatter(JsonDictFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    records: queue.SimpleQueue = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, writer)
    listener.start()
    atexit.register(listener.stop)
    root = logging.getLogger()
    root.handlers[:] = [DeferredQueueHandler(records)]
    root.setLevel(logging.INFO)
    for noisy in ("mlflow", "alembic", "httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return listener
