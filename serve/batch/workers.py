"""Where the pandas engine scores its chunks: in worker processes, or in this process.

On a CPU, scoring an image is Python-heavy (decoding, preprocessing) around a network that runs
fastest one thread per core (two one-thread processes outrun one two-thread process), and
decoding and preprocessing hold the GIL, so threads in one interpreter cannot overlap them
(``make bench``, section batch: ``--workers 1`` against the default). So by default each core
gets a worker process that loads the model once (one torch thread each) and scores whole chunks;
the parent only reads inputs and writes results.

Workers are forked from a server that has imported the scoring stack once
(``serve.batch.forkserver``). The model is loaded from one local copy, downloaded once by the
parent. A worker that cannot load it turns every chunk it gets into a ``BatchError`` naming why,
which stops the job with one readable line.

``InProcessScorer`` is the one-worker form (``--workers 1``): the model in this process, two
chunks in flight on two threads (the network releases the GIL while the next chunk decodes).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pandas as pd
import pyarrow as pa

from mnist_mlops.common.cores import available_cores, threads_each
from mnist_mlops.serve.batch import forkserver
from mnist_mlops.serve.batch.errors import BatchError
from mnist_mlops.serve.batch.results import score_chunk
from mnist_mlops.serve.batch.scoring_model import ScoringModel, load
from mnist_mlops.serve.loading import warn_about_environment
from mnist_mlops.serve.model import THREADS_ENV

ORPHAN_CHECK_SECONDS = 1.0


def default_workers() -> int:
    return available_cores()


class InProcessScorer:
    """The model in this process; ``submit`` scores a chunk on one of two threads."""

    chunks_in_flight = 2

    def __init__(self, scoring: ScoringModel) -> None:
        self.scoring = scoring
        self.model = load(scoring)
        self.ready_at = time.time()
        self._pool = ThreadPoolExecutor(self.chunks_in_flight, thread_name_prefix="scoring")

    def submit(self, chunk: pd.DataFrame) -> Future[pa.Table]:
        return self._pool.submit(score_chunk, self.model, chunk, self.scoring)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# --- in each worker process -------------------------------------------------------------------

_worker_model = None
_worker_error: str | None = None
_worker_ready_at = 0.0


def _exit_when_orphaned(parent: int) -> None:
    """A worker's parent is the forkserver, which exits when the job's process does (even on
    SIGKILL); a worker must not outlive them, idle on its queue forever."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os._exit(1)


def _start_worker(scoring: ScoringModel, model_path: str, torch_threads: int, check_environment: bool) -> None:
    """Worker initialiser: load the model once; remember why not, rather than dying unexplained."""
    global _worker_model, _worker_error, _worker_ready_at
    # Ctrl-C reaches the whole process group: the parent stops the job, workers must not print
    # a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    os.environ[THREADS_ENV] = str(torch_threads)
    try:
        _worker_model = load(scoring, model_path, check_environment)
    except BatchError as exc:
        _worker_error = str(exc)
    _worker_ready_at = time.time()


def _score_in_worker(chunk: pd.DataFrame, scoring: ScoringModel) -> tuple[pa.Table, float]:
    if _worker_model is None:
        raise BatchError(_worker_error or "the scoring worker has no model")
    return score_chunk(_worker_model, chunk, scoring), _worker_ready_at


class ProcessScorer:
    """``workers`` processes, each with the model loaded once from ``model_path``."""

    def __init__(self, scoring: ScoringModel, model_path: str, workers: int) -> None:
        self.scoring = scoring
        self.chunks_in_flight = 2 * workers  # the next chunk is queued before a worker is free
        self.ready_at = float("inf")  # the first worker's; known once its first chunk is back
        threads = threads_each(workers)
        # MLflow's warnings about the model's environment, given here once rather than by every
        # worker: each worker's check cost it half a second of start-up, and the job's output as
        # many copies of a warning as it has workers. (Workers are forked on the first submit.)
        checked = warn_about_environment(model_path)
        self._pool = ProcessPoolExecutor(
            workers,
            mp_context=forkserver.context(),
            initializer=_start_worker,
            initargs=(scoring, model_path, threads, not checked),
        )

    def submit(self, chunk: pd.DataFrame) -> Future[pa.Table]:
        table: Future[pa.Table] = Future()

        def unpack(done: Future) -> None:
            try:
                result, ready_at = done.result()
            except BrokenProcessPool:
                table.set_exception(BatchError("a scoring worker process died (out of memory or killed)"))
            except BaseException as exc:
                table.set_exception(exc)
            else:
                self.ready_at = min(self.ready_at, ready_at)
                table.set_result(result)

        self._pool.submit(_score_in_worker, chunk, self.scoring).add_done_callback(unpack)
        return table

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
