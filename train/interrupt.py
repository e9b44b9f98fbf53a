"""Ctrl-C and SIGTERM stop a training run at the next batch, not wherever the signal lands.

Python's own Ctrl-C raises ``KeyboardInterrupt`` in whatever code runs when the signal arrives:
inside an MLflow write, a SQLAlchemy commit or a library's cleanup. Once, in the suite, a run sent
SIGINT right after its first epoch trained on for 20 more seconds and had to be killed, the
interrupt lost on its way. So the CLI (``stop_requests``) only records the signal, and the loops
call ``check`` at each batch and before each step that writes for good (logging the model,
registering it): that raises ``Stopped``, a ``KeyboardInterrupt``, so MLflow ends the run as
failed and nothing is registered. A second signal does not wait: it raises at once.

SIGTERM (``kill``, a container or a scheduler stopping the job) used to end the process on the
spot, leaving its run "RUNNING" forever; it now stops the same way.

Without ``stop_requests`` (a notebook, the benchmarks) ``check`` never raises and Ctrl-C behaves
as Python's default.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested: int | None = None


class Stopped(KeyboardInterrupt):
    """A stop asked for by ``signum``; the CLI exits with 128 + ``signum``, as a shell would."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _record(signum: int, frame) -> None:
    global _requested
    if _requested is not None:  # asked twice: the person wants out now
        raise Stopped(signum)
    _requested = signum


def check() -> None:
    """Raise ``Stopped`` if a stop was asked for; cheap enough to call once per batch."""
    if _requested is not None:
        raise Stopped(_requested)


@contextmanager
def stop_requests() -> Iterator[None]:
    """Record SIGINT and SIGTERM for ``check`` while the block runs; the previous handlers after.

    Signal handlers can only be set from the main thread: elsewhere this changes nothing.
    """
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _record) for signum in SIGNALS}
    _requested = None
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _requested = None
