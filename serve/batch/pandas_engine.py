"""The pandas engine: stream the input in chunks through the pyfunc in this process."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pyarrow.compute as pc

from serve.batch.options import DEFAULT_CHUNK_ROWS
from serve.batch.results import score_chunk
from serve.batch.scoring_model import ScoringModel, load
from serve.batch.sources import open_source
from serve.batch.summary import Summary
from serve.batch.writers import ResultWriter
from train.progress import batch_progress

logger = logging.getLogger(__name__)


def run(
    scoring: ScoringModel,
    input_path: Path,
    output: Path,
    fmt: str = "parquet",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Summary:
    started = time.perf_counter()
    model = load(scoring)
    summary = Summary(engine="pandas", model_uri=scoring.uri, startup_seconds=time.perf_counter() - started)
    source = open_source(input_path)
    writer = ResultWriter(output, fmt)
    try:
        with batch_progress(source.count() or 0, "scoring") as progress:
            for chunk in source.chunks(chunk_rows):
                table = score_chunk(model, chunk, scoring)
                failed = int(pc.sum(pc.is_valid(table.column("error"))).as_py() or 0)
                summary.failed += failed
                summary.scored += table.num_rows - failed
                writer.write(table)
                progress.update(table.num_rows)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    summary.seconds = time.perf_counter() - started
    return summary
