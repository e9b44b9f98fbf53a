"""Batch on a real Spark cluster: a standalone master and a worker from pyspark's own distribution
on loopback (separate JVMs; the worker starts executors, which start their own Python workers),
and ``mnist-batch --engine spark --master spark://...`` gives the rows the local engine gives.

The worker's Python cannot import this project (its editable install is hidden from it by a
``sitecustomize`` on its ``PYTHONPATH``): the model must travel with ``spark_udf`` and our task
code by value, as on a cluster where nothing of the project is installed."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pyspark
import pytest

from tests.helpers import free_port, start_process, stop_process, subprocess_env
from tests.integration.batch.helpers import BAD, GOOD, assert_same_rows, batch

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"

# Runs first in every Python the worker starts: takes this project's editable install away, and
# leaves a mark, so the test knows the executors' Python workers ran under it.
HIDE_THE_PROJECT = """
import os, sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")
                    and not getattr(f, "__module__", "").startswith("__editable__")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path[:] = [p for p in sys.path if "__editable__" not in p]
for name in [n for n in sys.modules if n == "mnist_mlops" or n.startswith("mnist_mlops.")]:
    del sys.modules[name]
open(os.path.join(os.environ["HIDDEN_MARKS"], str(os.getpid())), "w").close()
"""


def cluster_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = subprocess_env()
    env |= {"SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(SPARK_CLASS.parent.parent)}
    return env | (extra or {})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(master URL, the marks folder, the worker's work folder)."""
    directory = tmp_path_factory.mktemp("spark-cluster")
    hidden, marks, work = directory / "hidden", directory / "marks", directory / "work"
    for folder in (hidden, marks, work):
        folder.mkdir()
    (hidden / "sitecustomize.py").write_text(HIDE_THE_PROJECT)
    port, ui = free_port(), free_port()
    master_options = ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)]
    master = start_process(
        [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", *master_options],
        cluster_env(),
        directory / "master.log",
    )
    url = f"spark://127.0.0.1:{port}"
    worker_options = ["--host", "127.0.0.1", "--cores", "2", "--memory", "2g", "--work-dir", str(work)]
    worker = start_process(
        [
            str(SPARK_CLASS),
            "org.apache.spark.deploy.worker.Worker",
            url,
            *worker_options,
            "--webui-port",
            str(free_port()),
        ],
        cluster_env({"PYTHONPATH": str(hidden), "HIDDEN_MARKS": str(marks)}),
        directory / "worker.log",
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # the master's own view: one worker, alive
            try:
                state = httpx.get(f"http://127.0.0.1:{ui}/json/", timeout=5).json()
                if [w["state"] for w in state.get("workers", [])] == ["ALIVE"]:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert time.monotonic() < deadline, (directory / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url, marks, work
    finally:
        stop_process(worker)
        stop_process(master)


def test_a_job_on_a_standalone_cluster_gives_the_local_engines_rows(cluster, store_uri, photo_folder, tmp_path):
    url, marks, work = cluster
    local_out, cluster_out = tmp_path / "local", tmp_path / "cluster"
    spark = ["--engine", "spark", "--input", str(photo_folder)]
    local = batch(store_uri, *spark, "--master", "local[1]", "--output", str(local_out))
    assert local.returncode == 0, local.stderr[-3000:]
    # SPARK_LOCAL_IP: the driver's address, as the cluster's executors reach it.
    remote = batch(store_uri, *spark, "--master", url, "--output", str(cluster_out), SPARK_LOCAL_IP="127.0.0.1")
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert f"scored {GOOD}, failed {BAD}" in remote.stdout, remote.stdout
    assert_same_rows(local_out, cluster_out)
    executors = list(work.glob("app-*/*/stderr"))  # the worker ran the job's executors itself
    assert executors, f"no executor ran in {work}"
    assert list(marks.iterdir()), "the executors' Python workers did not start without the project"
