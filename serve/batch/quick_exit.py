"""Imported by batch scoring's forkserver alone (``forkserver.PRELOAD``): once the job's process
has exited, the forkserver leaves without tearing down its interpreter.

The forkserver holds torch and MLflow, and an interpreter holding them takes about a second to
tear down here; all that second it keeps the job's stdout and stderr open, so a caller reading
them (a pipe, a CI log, ``$(mnist-batch ...)``) waited a second after the job had ended. The
forkserver has nothing to flush or close (each worker exits on its own, through ``os._exit``), so
it exits at once. Registered last, its exit handler runs first (they run in reverse order).
"""

from __future__ import annotations

import atexit
import os
import sys


def _leave_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def in_forkserver() -> bool:
    """Whether this is multiprocessing's forkserver process (``python -c "from
    multiprocessing.forkserver import main; main(...)"``): never a job's, a test's or a user's."""
    return sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules


if in_forkserver():
    atexit.register(_leave_now)
