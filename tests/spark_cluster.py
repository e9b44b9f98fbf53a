"""A Spark standalone cluster from pyspark's own distribution, on loopback: a master and workers,
each a JVM of its own, started as ``spark-class`` starts them on a real cluster's hosts (the
cluster test and the benchmark's scaling section use it)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyspark

from tests.helpers import free_port, start_process, stop_process, subprocess_env

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


def cluster_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = subprocess_env()
    env |= {"SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(SPARK_CLASS.parent.parent)}
    return env | (extra or {})


@contextlib.contextmanager
def standalone_cluster(
    directory: Path, workers: int = 1, cores: int = 2, worker_env: dict[str, str] | None = None
) -> Iterator[str]:
    """A master and ``workers`` workers of ``cores`` cores each, all alive in the master's own
    view; yields the master's ``spark://`` URL. Each worker's work folder is
    ``directory/work-<n>``."""
    port, ui = free_port(), free_port()
    options = ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)]
    master = start_process(
        [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", *options],
        cluster_env(),
        directory / "master.log",
    )
    url, started = f"spark://127.0.0.1:{port}", []
    try:
        for n in range(workers):
            (directory / f"work-{n}").mkdir(exist_ok=True)
            options = ["--host", "127.0.0.1", "--cores", str(cores), "--memory", "2g"]
            options += ["--work-dir", str(directory / f"work-{n}"), "--webui-port", str(free_port())]
            started.append(
                start_process(
                    [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", url, *options],
                    cluster_env(worker_env),
                    directory / f"worker-{n}.log",
                )
            )
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                state = httpx.get(f"http://127.0.0.1:{ui}/json/", timeout=5).json()
                if [w["state"] for w in state.get("workers", [])] == ["ALIVE"] * workers:
                    break
            if time.monotonic() > deadline:
                logs = "".join((directory / f"worker-{n}.log").read_text()[-1500:] for n in range(workers))
                raise RuntimeError(f"the Spark workers did not join the master in 120 s: {logs}")
            time.sleep(0.5)
        yield url
    finally:
        for worker in started:
            stop_process(worker)
        stop_process(master)
