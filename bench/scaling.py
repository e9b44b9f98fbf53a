"""Past one machine, measured on one (``make bench ONLY=scaling``; the quick mode leaves it out).

- **Online**: the gateway on Ray Serve (``--engine ray``: one application multiplexed by version,
  ``@serve.batch`` in its replicas, a local Ray started by the gateway) beside the gateway on its
  own backends, each with one and with two replicas fixed (``--min_replicas`` = ``--max_replicas``),
  under the peers section's rounds and loads (``bench.peers.harness.one_round``: launch to the
  first correct answer, c1, c32 with its CPU, c1 right after, 64 images a request, peak memory of
  the whole process tree), interleaved, medians.
- **Batch**: ``mnist-batch --engine spark`` on a Spark standalone cluster started from pyspark's
  distribution on loopback (``tests.spark_cluster``), with one worker and with two workers of one
  core each, on the same 10,000 files, the bare network measured around each job.

A replica or a worker gets one core of this 2-core machine: the curve from one to two is what a
second core buys each engine, the most a second machine could buy it (it brings its own cores and
memory bus, but also the network the requests and images then cross).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from bench import processes
from bench.batch import Job, measure_job, write_pngs
from bench.core import Figure, Mode, ModelUnderTest, ratio
from bench.online import OPTIMISED_ARGS
from bench.peers import harness
from bench.report import find

SECTION = "scaling"
LOCAL = "gateway, local backends"
RAY = "gateway on Ray Serve (--engine ray)"
SPARK = "spark standalone cluster"
FILES = 10_000


def online_name(engine: str, replicas: int) -> str:
    return f"{engine}: {replicas} replica{'s' if replicas > 1 else ''}"


def spark_label(workers: int) -> str:
    return f"{SPARK}, {workers} worker{'s' if workers > 1 else ''} of 1 core"


def ray_gateway(model: ModelUnderTest, replicas: int) -> processes.Server:
    """A gateway that starts its own local Ray and deploys the application with ``replicas``."""
    arguments = [*OPTIMISED_ARGS, "--engine", "ray", "--min_replicas", str(replicas), "--max_replicas", str(replicas)]
    return processes.gateway(
        model.tracking_uri, model.directory, *arguments, "--ray_http_port", str(processes.free_port())
    )


def systems(model: ModelUnderTest) -> list[harness.System]:
    found = []
    for replicas in (1, 2):
        pinned = ["--min_replicas", str(replicas), "--max_replicas", str(replicas)]
        arguments = [*OPTIMISED_ARGS, *pinned]
        local = functools.partial(processes.gateway, model.tracking_uri, model.directory, *arguments)
        found.append(harness.System(online_name(LOCAL, replicas), {"arguments": arguments}, local))
        ray_arguments = [*arguments, "--engine", "ray"]
        ray = functools.partial(ray_gateway, model, replicas)
        found.append(harness.System(online_name(RAY, replicas), {"arguments": ray_arguments}, ray))
    return found


def measure_online(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    return harness.run_rounds(mode, model, systems(model), SECTION)


def measure_spark(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    from tests.spark_cluster import standalone_cluster

    root = Path(tempfile.mkdtemp(prefix="mnist-bench-scaling-"))
    folder = write_pngs(root / "images", mode.count(FILES, 1_000))
    figures = []
    for workers in (1, 2):
        directory = root / f"cluster-{workers}"
        directory.mkdir()
        with standalone_cluster(directory, workers=workers, cores=1) as url:
            # SPARK_LOCAL_IP: the driver's address, as the cluster's executors reach it.
            args = ("--engine", "spark", "--master", url)
            job = Job(spark_label(workers), args, env=(("SPARK_LOCAL_IP", "127.0.0.1"),))
            figures += measure_job(job, model, folder, mode.count(FILES, 1_000), mode.seconds(1.0, 0.2))
    return figures


def scaling_ratios(figures: list[Figure]) -> list[Figure]:
    """Two replicas (workers) over one, for each engine; Ray Serve over the local backends at the
    same replicas."""
    out = []
    for engine in (LOCAL, RAY):
        for what in (harness.C1, harness.C32, harness.IMAGES_64, harness.MEMORY):
            two, one = (find(figures, SECTION, f"{online_name(engine, n)}: {what}") for n in (2, 1))
            out.append(ratio(f"scaling: {engine}, 2 replicas / 1, {what}", two, one))
    for replicas in (1, 2):
        for what in (harness.C1, harness.C32, harness.IMAGES_64, harness.LAUNCH, harness.MEMORY, harness.CPU):
            on_ray = find(figures, SECTION, f"{online_name(RAY, replicas)}: {what}")
            local = find(figures, SECTION, f"{online_name(LOCAL, replicas)}: {what}")
            out.append(ratio(f"scaling: Ray Serve / local backends, {replicas} replica(s), {what}", on_ray, local))
        on_ray, local = (find(figures, SECTION, f"{online_name(e, replicas)}: {harness.C32}") for e in (RAY, LOCAL))
        if on_ray and local:
            name = f"scaling: Ray Serve / local backends, {replicas} replica(s), {harness.C32} p99"
            out.append(ratio(name, harness.p99_of(on_ray), harness.p99_of(local)))
    spark = {
        n: next((f for f in figures if f.name.startswith(f"{spark_label(n)}, ") and "excluding" in f.name), None)
        for n in (1, 2)
    }
    two, one = spark[2], spark[1]
    out.append(ratio(f"scaling: {SPARK}, 2 workers / 1, excluding start-up", two, one))
    return [figure for figure in out if figure is not None]


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    figures = measure_online(mode, model) + measure_spark(mode, model)
    return figures + scaling_ratios(figures)
