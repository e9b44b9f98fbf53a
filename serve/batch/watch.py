"""Watch mode: score each new file in a folder once, as it arrives ("a file arrives, work happens").

- A file is read only when it is complete: its size and modification time have not changed for
  ``settle_seconds`` across two polls. Names an uploader uses while writing (dotfiles, ``*.part``,
  ``*.tmp``, ``*.partial``) are never read.
- Each batch of results is written as its own part file, ``part-<n>.parquet`` (or ``.csv``), first
  under a temporary name and then renamed: the rename is the single commit point. The part files
  are also the ledger: on start, the ids already in them are what has been scored, so a restart
  neither scores a file twice nor skips one, and no second file can disagree with the output.
- Setting ``stop`` (the CLI sets it on SIGINT/SIGTERM) finishes the batch in hand, commits it,
  and stops.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mnist_mlops.serve.batch.errors import BatchError
from mnist_mlops.serve.batch.results import score_chunk
from mnist_mlops.serve.batch.scoring_model import ScoringModel, load
from mnist_mlops.serve.batch.sources import image_files, read_file, source_frame
from mnist_mlops.serve.batch.summary import Summary
from mnist_mlops.serve.batch.writers import cannot_write, csv_ready, probe_writable

logger = logging.getLogger(__name__)

IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload")


@dataclass
class Ledger:
    """The ids already scored, read from the committed part files of the output folder."""

    folder: Path
    fmt: str
    scored: set[str] = field(default_factory=set)
    next_part: int = 0

    def load(self) -> Ledger:
        parts = sorted(self.folder.glob(f"part-*.{self.fmt}"))
        for part in parts:
            ids = (
                pd.read_parquet(part, columns=["id"])
                if self.fmt == "parquet"
                else pd.read_csv(part, usecols=["id"], dtype=str)
            )
            self.scored.update(ids["id"].astype(str))
        numbers = [int(p.stem.split("-")[1]) for p in parts if p.stem.split("-")[1].isdigit()]
        self.next_part = max(numbers, default=-1) + 1
        for leftover in self.folder.glob(".part-*"):  # a crash mid-write: never committed
            leftover.unlink(missing_ok=True)
        return self

    def commit(self, table) -> Path:
        """Write ``table`` as the next part atomically; then remember its ids."""
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        final = self.folder / f"part-{self.next_part:06d}.{self.fmt}"
        temporary = self.folder / f".{final.name}"
        try:
            if self.fmt == "parquet":
                pq.write_table(table, temporary)
            else:
                pacsv.write_csv(csv_ready(table), temporary)
            with open(temporary, "rb") as f:
                os.fsync(f.fileno())
            os.replace(temporary, final)
        except OSError as exc:  # a full disk: stop; the rows not committed are scored on restart
            raise cannot_write(final, exc) from None
        self.scored.update(table.column("id").to_pylist())
        self.next_part += 1
        return final


def _in_progress(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower().endswith(IN_PROGRESS_SUFFIXES)


@dataclass
class Watcher:
    inbox: Path
    ledger: Ledger
    settle_seconds: float = 1.0
    seen: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # id -> (size, mtime_ns, first seen)

    def ready_files(self, limit: int) -> list[tuple[str, Path]]:
        """New files whose size and mtime have held still for ``settle_seconds``."""
        now, ready = time.monotonic(), []
        for file_id, name in image_files(self.inbox):
            path = Path(name)
            if file_id in self.ledger.scored or _in_progress(path):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            signature = (stat.st_size, stat.st_mtime_ns)
            previous = self.seen.get(file_id)
            if previous is None or previous[:2] != signature:
                self.seen[file_id] = (*signature, now)
            elif now - previous[2] >= self.settle_seconds and time.time() - stat.st_mtime >= self.settle_seconds:
                ready.append((file_id, path))
                if len(ready) >= limit:
                    break
        return ready


def watch(
    scoring: ScoringModel,
    inbox: Path,
    output: Path,
    fmt: str = "parquet",
    poll_seconds: float = 1.0,
    settle_seconds: float = 1.0,
    chunk_rows: int = 256,
    stop: threading.Event | None = None,
) -> Summary:
    """Score files arriving in ``inbox`` into part files under ``output`` until stopped."""
    if not inbox.is_dir():
        raise BatchError(f"watch folder {inbox} does not exist or is not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(output, exc) from None
    probe_writable(output, output)
    stop = stop or threading.Event()
    started = time.perf_counter()
    model = load(scoring)
    ledger = Ledger(output, fmt).load()
    watcher = Watcher(inbox, ledger, settle_seconds)
    summary = Summary(engine="watch", model_uri=scoring.uri, startup_seconds=time.perf_counter() - started)
    logger.info("watching %s (%d files already scored); results in %s", inbox, len(ledger.scored), output)
    while not stop.is_set():
        ready = watcher.ready_files(chunk_rows)
        if not ready:
            stop.wait(poll_seconds)
            continue
        rows = [(file_id, *read_file(path)) for file_id, path in ready]
        table = score_chunk(model, source_frame([(i, data, None, error) for i, data, error in rows]), scoring)
        part = ledger.commit(table)
        failed = sum(e is not None for e in table.column("error").to_pylist())
        summary.scored += table.num_rows - failed
        summary.failed += failed
        logger.info("scored %d files (%d failed) -> %s", table.num_rows, failed, part.name)
    summary.seconds = time.perf_counter() - started
    return summary
