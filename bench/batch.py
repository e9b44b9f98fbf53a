"""Batch scoring: ``mnist-batch`` run as a user runs it, on MNIST test images written as PNG files,
against the bare network measured just before and just after each job.

Jobs: the pandas engine with its default worker processes and in this process (``--workers 1``),
Spark in ``local[2]`` on 10,000 files and on 5x as many, and the pandas engine on 5x as many for
its memory. Each job reports images/s excluding its start-up (the engine's own account: from the
moment the model is ready, in a first worker or on every executor slot) and including it (over
the whole command's wall time, interpreter start and imports included), and the sum of the peak
resident sets of its processes (the job, its workers, the forkserver; Spark's JVM and Python
workers; pages they share are counted in each).

Beside the Spark jobs, the ceiling Spark leaves its engine (``bench.spark_floor``): Spark's own cost
with no model, and the model's in one thread, against the same bare network.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import processes, spark_floor
from bench.core import BenchError, Figure, Mode, ModelUnderTest, mnist_test, png, ratio
from bench.network import best_batch
from bench.plain_batch import CHUNK

SPARK = ("--engine", "spark", "--master", "local[2]")
PLAIN = "plain script (mlflow.pyfunc.load_model, predict in chunks)"
WHOLE = "mnist-batch whole command (pandas engine), alternating with the plain script"
FLOOR = "import floor: a fresh interpreter importing what a scoring process needs (forkserver.PRELOAD), no teardown"
CEILING = "mnist-batch whole command ceiling: the import floor, then its own scoring after start-up"


@dataclass(frozen=True)
class Job:
    label: str  # names the figures
    args: tuple[str, ...]
    scale: int = 1  # input size, in multiples of the base count
    memory: bool = False  # report its peak memory
    full_only: bool = False  # the quick mode (the suite's smoke run) skips it: same code path as another
    env: tuple[tuple[str, str], ...] = ()  # added to the job's environment


JOBS = (
    Job("pandas engine", ()),
    Job("pandas engine, in this process (--workers 1)", ("--workers", "1")),
    Job("spark local[2]", SPARK),
    Job("spark local[2]", SPARK, scale=5, full_only=True),
    Job("pandas engine", (), scale=5, memory=True),
)


def write_pngs(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = mnist_test()
    for i in range(count):
        (folder / f"{i:06d}.png").write_bytes(png(images[i % len(images)]))
    return folder


def run_job(model: ModelUnderTest, folder: Path, *extra: str, **env: str) -> tuple[dict, float, float]:
    """(the job's JSON summary, the command's wall seconds, the sum of its processes' peak
    resident sets in MiB); ``env`` adds to the job's environment."""
    output = Path(tempfile.mkdtemp(prefix="scores-")) / "out"
    command = [sys.executable, "-m", "mnist_mlops.serve.batch", "--model", model.model_uri]
    command += ["--input", str(folder), "--output", str(output), "--json", *extra]
    log = output.parent / "job.log"
    started = time.perf_counter()
    with open(log, "wb") as stderr:
        job = subprocess.Popen(
            command,
            env=processes.environment(model.tracking_uri, **env),
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
        peak = 0.0
        while job.poll() is None:  # peaks are per process: read them while the processes live
            peak = max(peak, processes.peak_rss_mib(job.pid))
            time.sleep(0.1)
        stdout = job.stdout.read()
    wall = time.perf_counter() - started
    if job.returncode != 0:
        raise BenchError(f"mnist-batch {' '.join(extra)} failed: {log.read_text(errors='replace')[-500:]}")
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    if summary["failed"]:
        raise BenchError(f"mnist-batch {' '.join(extra)}: {summary['failed']} images failed")
    return summary, wall, peak


def baseline_name(name: str) -> str:
    return f"bare network best batch, around the job: {name}"


def bare_network_around(name: str, before: tuple[float, int], after: tuple[float, int]) -> Figure:
    """The bare network's best batch (``best_batch``: images/s, batch) measured just before and
    just after the job ``name``, as the baseline its ratios are taken against."""
    return Figure(
        "batch",
        baseline_name(name),
        (before[0] + after[0]) / 2,
        "images/s",
        {"before": round(before[0]), "before_batch": before[1], "after": round(after[0]), "after_batch": after[1]},
    )


def measure_job(job: Job, model: ModelUnderTest, folder: Path, count: int, sweep: float) -> list[Figure]:
    before = best_batch(sweep)
    summary, wall, peak = run_job(model, folder, *job.args, **dict(job.env))
    after = best_batch(sweep)
    name = f"{job.label}, {count} PNG files"
    detail = {
        "command_seconds": round(wall, 2),
        "job_seconds": round(summary["seconds"], 2),
        "startup_seconds": round(summary["startup_seconds"], 2),
    }
    figures = [
        Figure("batch", f"{name}, excluding start-up", summary["images_per_second"], "images/s", detail),
        Figure("batch", f"{name}, including start-up", summary["total"] / wall, "images/s", detail),
        bare_network_around(name, before, after),
    ]
    if job.memory or job.scale == 1:
        memory = {"job": job.label, "count": count}
        figures.append(Figure("memory", f"{name}: peak RSS, sum over its processes", peak, "MiB", memory))
    return figures


def measure_spark_ceiling(model: ModelUnderTest, folder: Path, count: int, sweep: float) -> list[Figure]:
    """Spark's floor and the model in one thread (``bench.spark_floor``, in a process of its own),
    and the ceiling they leave the engine, with the bare network measured around them."""
    before = best_batch(sweep)
    command = [sys.executable, "-m", "bench.spark_floor", "--folder", str(folder), "--model", str(model.local_path)]
    command += ["--seconds", str(3 * sweep)]
    done = subprocess.run(command, env=processes.environment(model.tracking_uri), capture_output=True, text=True)
    after = best_batch(sweep)
    if done.returncode != 0:
        raise BenchError(f"bench.spark_floor failed: {done.stderr[-500:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    floor = f"spark local[2] floor, no model (binaryFile alone, a constant Arrow UDF, Parquet), {count} PNG files"
    first = Figure("batch", f"{floor}, first job in its JVM", count / measured["floor_first"], "images/s")
    again = Figure("batch", f"{floor}, again in the same JVM (best of 3)", count / measured["floor_again"], "images/s")
    model_rate = measured["model_one_thread"]
    rows = spark_floor.ARROW_BATCH_ROWS
    one_thread = Figure("batch", f"pyfunc in one thread, {rows}-row frames of PNG files", model_rate, "images/s")
    name = f"spark local[2] ceiling, {count} PNG files"
    ceilings = [
        Figure(
            "batch",
            f"{name}: the floor ({which}) and the model on 2 cores, no other cost",
            spark_floor.ceiling(floor_figure.value, model_rate),
            "images/s",
            {"floor_images_per_second": round(floor_figure.value), "model_one_thread": round(model_rate)},
        )
        # The engine's job is the first over files in its JVM; the repeated job is the most Spark leaves.
        for which, floor_figure in (("first job in its JVM", first), ("best repeated job", again))
    ]
    return [
        first,
        again,
        one_thread,
        *ceilings,
        bare_network_around(name, before, after),
    ]


def plain_script_seconds(model: ModelUnderTest, folder: Path, count: int) -> float:
    """Wall seconds of ``bench.plain_batch``'s whole command (interpreter start to exit) on ``folder``."""
    output = Path(tempfile.mkdtemp(prefix="plain-")) / "scores.parquet"
    command = [sys.executable, "-m", "bench.plain_batch", "--model", model.model_uri]
    command += ["--input", str(folder), "--output", str(output)]
    started = time.perf_counter()
    done = subprocess.run(command, env=processes.environment(model.tracking_uri), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0 or done.stdout.strip().splitlines()[-1:] != [str(count)]:
        raise BenchError(f"bench.plain_batch failed: {done.stderr[-500:]}")
    return wall


def import_floor_seconds() -> float:
    """Wall seconds of a fresh interpreter that imports the scoring stack (``forkserver.PRELOAD``:
    torch, MLflow's pyfunc, SciPy, Pillow, the worker module) and leaves through ``os._exit``: what
    any process must pay before it scores a first image, ``mnist-batch``'s workers and the plain
    script alike. The interpreter's teardown (about a second after these imports) is left out: a
    command can skip it, as ``mnist-batch`` does."""
    from mnist_mlops.serve.batch.forkserver import PRELOAD

    script = f"import os, {', '.join(PRELOAD)}; os._exit(0)"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"importing the scoring stack failed: {done.stderr[-500:]}")
    return wall


def measure_whole_commands(model: ModelUnderTest, folder: Path, count: int, rounds: int) -> list[Figure]:
    """``mnist-batch`` (the pandas engine, its defaults) and the plain script, each as a whole
    command, in alternating rounds (the first run of either after the files are written pays for
    cold caches: about 1.5 s more here), medians. Beside them, the most a whole command can do on
    this machine: the import floor (``import_floor_seconds``) followed by ``mnist-batch``'s own
    scoring once its first worker is ready, from the same round's job."""
    ours, plain, floor, ceiling = [], [], [], []
    for _ in range(rounds):
        summary, wall, _ = run_job(model, folder)
        ours.append(wall)
        plain.append(plain_script_seconds(model, folder, count))
        floor.append(import_floor_seconds())
        ceiling.append(floor[-1] + summary["seconds"] - summary["startup_seconds"])
    floor_name = f"{FLOOR}, beside the {count}-file rounds"
    figures = [Figure("batch", floor_name, statistics.median(floor), "s", {"rounds": [round(x, 2) for x in floor]})]
    for name, seconds in ((WHOLE, ours), (PLAIN, plain), (CEILING, ceiling)):
        median = statistics.median(seconds)
        detail = {"command_seconds": round(median, 2), "rounds": [round(x, 2) for x in seconds]}
        if name == PLAIN:
            detail["chunk"] = CHUNK
        figures.append(
            Figure("batch", f"{name}, {count} PNG files, including start-up", count / median, "images/s", detail)
        )
    return figures


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    root = Path(tempfile.mkdtemp(prefix="mnist-bench-batch-"))
    count = mode.count(10_000, 1_000)
    jobs = [job for job in JOBS if not (mode.quick and job.full_only)]
    folders = {scale: write_pngs(root / f"x{scale}", count * scale) for scale in {job.scale for job in jobs}}
    sweep = mode.seconds(1.0, 0.2)
    figures = []
    for job in jobs:
        figures += measure_job(job, model, folders[job.scale], count * job.scale, sweep)
    for scale in sorted(folders)[: 1 if mode.quick else None]:
        figures += measure_whole_commands(model, folders[scale], count * scale, mode.count(3, 1))
    return figures + measure_spark_ceiling(model, folders[1], count, sweep)


def ratios(figures: list[Figure]) -> list[Figure | None]:
    """Each job's images/s, and the Spark engine's ceiling, over the bare network's best batch
    measured around it; the Spark engine's images/s over its ceiling (its job is the first over
    files in its JVM: the ceiling with the first job's floor is the one it can reach); and the
    pandas engine's peak memory on 5x the input over 1x (streaming: it must not grow)."""
    out = []
    for figure in figures:
        if figure.section != "batch" or not ("start-up" in figure.name or "ceiling" in figure.name):
            continue
        name = figure.name.split(":")[0] if "ceiling" in figure.name else figure.name.rsplit(", ", 1)[0]
        baseline = next((f for f in figures if f.name == baseline_name(name)), None)
        out.append(ratio(f"batch {figure.name} / bare network best around the job", figure, baseline))
    for plain in (f for f in figures if f.name.startswith(PLAIN)):
        files = plain.name.removeprefix(f"{PLAIN}, ")
        ours = next((f for f in figures if f.name == f"{WHOLE}, {files}"), None)
        out.append(ratio(f"batch whole command: mnist-batch / {PLAIN}, {files}", ours, plain))
        ceiling = next((f for f in figures if f.name == f"{CEILING}, {files}"), None)
        out.append(ratio(f"batch whole command: its ceiling / {PLAIN}, {files}", ceiling, plain))
    for ceiling in (f for f in figures if f.name.startswith("spark local[2] ceiling, ")):
        files = ceiling.name.removeprefix("spark local[2] ceiling, ").split(":")[0]
        engine = next((f for f in figures if f.name == f"spark local[2], {files}, excluding start-up"), None)
        which = ceiling.name.split("(")[1].split(")")[0]
        out.append(
            ratio(f"batch spark local[2] engine / its ceiling with the floor of the {which}, {files}", engine, ceiling)
        )
    memory = [f for f in figures if f.section == "memory" and f.detail.get("job") == "pandas engine"]
    if len(memory) == 2:
        small, large = sorted(memory, key=lambda f: f.detail["count"])
        out.append(ratio("batch peak RSS: pandas engine on 5x the input / 1x", large, small))
    return out
