"""The inference log's writes on its two databases, in one run: a SQLite file (one gateway's
default) and PostgreSQL (a team's shared log, on a private cluster started here with ``initdb``/
``pg_ctl``, as ``mnist-team-server`` starts one).

Measured through ``InferenceLog`` itself, as a gateway uses it: answers of one image each are
queued and the writer thread stores them in batches; rows/s is from the first answer queued to the
flush that confirms the last one is stored. "2 writers" runs two logs on one database at once, in
two processes, as two gateway replicas behind one address do. Feedback is the round trip a client waits for
(``POST /feedback`` is answered once the row is stored): median and p99 of sequential calls.
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.core import BenchError, Figure, Mode
from mnist_mlops.registry.inference_log.writer import Answer, InferenceLog
from tests.postgres import private_postgres

SECTION = "inference log"
BODY = b'{"predictions": [{"label": 3, "confidence": 0.97, "probabilities": []}]}'


def _answers(count: int, prefix: str) -> list[Answer]:
    now = time.time()
    return [
        Answer(f"{prefix}-{i}", "serve", now, "champion", "1", None, 2.0, 200, BODY, key_name="bench")
        for i in range(count)
    ]


def _write(log: InferenceLog, answers: list[Answer]) -> None:
    for answer in answers:
        log.record(answer)
    if not log.flush().result(120):
        raise RuntimeError("the inference log did not store every row")


def _writer(url: str, rows: int, ready, results) -> None:
    """One writer process: open the log, warm it, wait for the others, write, report its span."""
    log = InferenceLog(url)
    try:
        _write(log, _answers(200, f"warm-{uuid.uuid4().hex}"))  # connection and tables ready
        batch = _answers(rows, uuid.uuid4().hex)
        ready.wait()
        started = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
        _write(log, batch)
        results.put((started, time.perf_counter()))
    except Exception as exc:
        results.put(repr(exc))
    finally:
        log.close()


def _rows_per_second(url: str, writers: int, rows: int) -> float:
    """Rows/s of ``writers`` processes on one database, each writing ``rows`` at once, from the
    first start to the last confirmed row."""
    context = multiprocessing.get_context("spawn")  # not a fork of a process that may hold torch
    ready, results = context.Barrier(writers), context.Queue()
    processes = [context.Process(target=_writer, args=(url, rows, ready, results)) for _ in range(writers)]
    for process in processes:
        process.start()
    spans = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(30)
    failed = [span for span in spans if isinstance(span, str)]
    if failed:
        raise BenchError(f"an inference log writer failed: {failed[0]}")
    return writers * rows / (max(end for _, end in spans) - min(start for start, _ in spans))


def _feedback_ms(url: str, calls: int) -> tuple[float, float]:
    """(median, p99) ms of a feedback call that joins a stored prediction."""
    log = InferenceLog(url)
    try:
        answers = _answers(calls, f"fb-{uuid.uuid4().hex}")
        _write(log, answers)
        times = []
        for answer in answers:
            started = time.perf_counter()
            log.feedback(answer.request_id, 0, 3).result(30)
            times.append(1000 * (time.perf_counter() - started))
    finally:
        log.close()
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def _measure_one(database: str, url: str, mode: Mode) -> list[Figure]:
    rows, calls = mode.count(50_000, 2_000), mode.count(500, 50)
    figures = []
    for writers in (1, 2):
        rate = _rows_per_second(url, writers, rows)
        name = f"{database}: rows written/s, {writers} writer{'s' if writers > 1 else ''}"
        figures.append(Figure(SECTION, name, rate, "rows/s", {"rows_per_writer": rows, "writers": writers}))
    median, p99 = _feedback_ms(url, calls)
    figures.append(Figure(SECTION, f"{database}: feedback round trip, median", median, "ms", {"p99_ms": round(p99, 2)}))
    return figures


def measure(mode: Mode) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-log-") as folder:
        figures = _measure_one("SQLite", f"sqlite:///{Path(folder) / 'log.db'}", mode)
    with private_postgres("bench_log") as url:
        figures += _measure_one("PostgreSQL", url, mode)
    return figures
