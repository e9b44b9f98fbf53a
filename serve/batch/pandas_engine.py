"""The pandas engine: stream the input in chunks through the pyfunc, on every core of this machine.

The input is read here, chunk by chunk, and each chunk is scored by a scorer from
``serve.batch.workers``: by default one worker process per core, each with the model loaded
once; with ``workers=1``, the model in this process. Results are written in input order as they
come back, and at most the scorer's ``chunks_in_flight`` + 1 chunks are held in memory, whatever
the input's size.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mnist_mlops.common.progress import batch_progress, interactive
from mnist_mlops.serve.batch.options import DEFAULT_CHUNK_ROWS
from mnist_mlops.serve.batch.scoring_model import ScoringModel, cannot_load
from mnist_mlops.serve.batch.sources import open_source
from mnist_mlops.serve.batch.summary import Summary
from mnist_mlops.serve.batch.workers import InProcessScorer, ProcessScorer, default_workers
from mnist_mlops.serve.batch.writers import ResultWriter

logger = logging.getLogger(__name__)


def _local_copy(scoring: ScoringModel, folder: Path) -> str:
    """The model as a local folder, downloaded once for all workers (a local path is used as is)."""
    if Path(scoring.uri).is_dir():
        return scoring.uri
    import mlflow

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=scoring.uri, dst_path=str(folder))
    except Exception as exc:  # unreachable store, missing artifacts: fatal for the job
        raise cannot_load(scoring.uri, exc) from None


def run(
    scoring: ScoringModel,
    input_path: Path,
    output: Path,
    fmt: str = "parquet",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    workers: int = 0,
    paths_outside: bool = False,
) -> Summary:
    """Score ``input_path`` into ``output``; ``workers`` 0 means one per core; ``paths_outside``:
    a table's image paths may lead outside its folder."""
    started = time.time()
    workers = workers or default_workers()
    source = open_source(input_path, paths_outside)
    staging = Path(tempfile.mkdtemp(prefix="mnist-batch-model-"))
    try:
        if workers == 1:
            scorer = InProcessScorer(scoring)
        else:
            scorer = ProcessScorer(scoring, _local_copy(scoring, staging), workers)
        try:
            summary = _score_all(scorer, source, ResultWriter(output, fmt), chunk_rows, scoring)
        finally:
            scorer.close()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary.seconds = time.time() - started
    # Start-up: until the model was ready to score in a first worker (or in this process).
    summary.startup_seconds = max(0.0, min(scorer.ready_at, time.time()) - started)
    return summary


def _score_all(scorer, source, writer: ResultWriter, chunk_rows: int, scoring: ScoringModel) -> Summary:
    summary = Summary(engine="pandas", model_uri=scoring.uri)
    pending: deque[Future[pa.Table]] = deque()
    try:
        # Counting walks the input once more: only a person watching the bar needs the total.
        total = (source.count() or 0) if interactive() else 0
        with batch_progress(total, "scoring") as progress:

            def write_oldest() -> None:
                table = pending.popleft().result()
                failed = int(pc.sum(pc.is_valid(table.column("error"))).as_py() or 0)
                summary.failed += failed
                summary.scored += table.num_rows - failed
                writer.write(table)
                progress.update(table.num_rows)

            for chunk in source.chunks(chunk_rows):
                pending.append(scorer.submit(chunk))
                if len(pending) >= scorer.chunks_in_flight:
                    write_oldest()
            while pending:
                write_oldest()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return summary
