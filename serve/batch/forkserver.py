"""The process that batch scoring's worker processes are forked from, started early.

A ``forkserver`` imports the scoring stack once (torch, MLflow, SciPy, Pillow) and forks each worker
from that state: no worker re-imports torch, and no worker is forked from the multi-threaded job
process. Started first thing by the command line, it imports while the job resolves its model
and lists its input, on the other core.

Import-light on purpose: the command line imports this before anything heavy.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context

# Last: it makes the server leave at once when the job is done (``serve.batch.quick_exit``).
PRELOAD = [
    "torch",
    "scipy.ndimage",
    "PIL.Image",
    "mlflow.pyfunc",
    "mnist_mlops.serve.batch.workers",
    "mnist_mlops.serve.batch.quick_exit",
]


def context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context whose processes fork from the preloaded server."""
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)
    return forkserver


def start() -> None:
    """Start the server now (it imports in the background); the first worker waits for it."""
    context()
    multiprocessing.forkserver.ensure_running()
