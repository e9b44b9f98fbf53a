"""Batch scoring: the pandas and Spark engines on MNIST test images written as PNG files, run as a
user runs them (``mnist-batch``), against the bare network; and the pandas engine's peak memory on
a small and a large input (a streamed input must not grow with its size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import processes
from bench.core import BenchError, Figure, Mode, ModelUnderTest, mnist_test, png
from bench.network import best_batch


def write_pngs(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = mnist_test()
    for i in range(count):
        (folder / f"{i:06d}.png").write_bytes(png(images[i % len(images)]))
    return folder


def run_job(model: ModelUnderTest, folder: Path, *extra: str) -> tuple[dict, float]:
    """(the job's JSON summary, its peak resident set in MiB)."""
    output = Path(tempfile.mkdtemp(prefix="scores-")) / "out"
    command = [
        sys.executable,
        "-m",
        "serve.batch",
        "--model",
        model.model_uri,
        "--input",
        str(folder),
        "--output",
        str(output),
        "--json",
        *extra,
    ]
    env = processes.environment(model.tracking_uri)
    with open(output.parent / "job.log", "wb") as log:
        job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log)
        stdout = job.stdout.read()
        _, status, usage = os.wait4(job.pid, 0)
    if status != 0:
        tail = (output.parent / "job.log").read_text(errors="replace")[-500:]
        raise BenchError(f"mnist-batch {' '.join(extra)} failed: {tail}")
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    if summary["failed"]:
        raise BenchError(f"mnist-batch {' '.join(extra)}: {summary['failed']} images failed")
    return summary, usage.ru_maxrss / 1024


def baseline_around(engine: str, before: tuple[float, int], after: tuple[float, int]) -> Figure:
    """The bare network's best batch measured just before and just after one engine's job."""
    return Figure(
        "batch",
        f"bare network best batch, around the {engine} job",
        (before[0] + after[0]) / 2,
        "images/s",
        {
            "before": round(before[0]),
            "before_batch": before[1],
            "after": round(after[0]),
            "after_batch": after[1],
            "note": "mean of the two; the baseline of this engine's ratio",
        },
    )


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    root = Path(tempfile.mkdtemp(prefix="mnist-bench-batch-"))
    count = mode.count(10_000, 1_000)
    folder = write_pngs(root / "images", count)
    figures = []
    sweep = mode.seconds(1.0, 0.2)
    before = best_batch(sweep)
    pandas, pandas_rss = run_job(model, folder)
    figures.append(baseline_around("pandas", before, best_batch(sweep)))
    figures.append(
        Figure(
            "batch",
            f"pandas engine, {count} PNG files",
            pandas["images_per_second"],
            "images/s",
            {"seconds": round(pandas["seconds"], 2), "startup_seconds": round(pandas["startup_seconds"], 2)},
        )
    )
    before = best_batch(sweep)
    spark, _ = run_job(model, folder, "--engine", "spark", "--master", "local[2]")
    figures.append(baseline_around("spark", before, best_batch(sweep)))
    figures.append(
        Figure(
            "batch",
            f"spark local[2], {count} PNG files, excluding session start",
            spark["images_per_second"],
            "images/s",
            {"startup_seconds": round(spark["startup_seconds"], 2)},
        )
    )
    figures.append(
        Figure(
            "batch",
            f"spark local[2], {count} PNG files, including session start",
            spark["total"] / spark["seconds"],
            "images/s",
            {"seconds": round(spark["seconds"], 2)},
        )
    )
    large = write_pngs(root / "large", count * 5)
    _, large_rss = run_job(model, large)
    figures.append(Figure("memory", f"pandas batch job, {count} images, peak RSS", pandas_rss, "MiB"))
    figures.append(Figure("memory", f"pandas batch job, {count * 5} images, peak RSS", large_rss, "MiB"))
    return figures
