"""Batch on a real Spark cluster: a standalone master and a worker from pyspark's own distribution
on loopback (separate JVMs; the worker starts executors, which start their own Python workers),
and ``mnist-batch --engine spark --master spark://...`` gives the rows the local engine gives.

The worker's Python cannot import this project (its editable install is hidden from it by a
``sitecustomize`` on its ``PYTHONPATH``): the model must travel with ``spark_udf`` and our task
code by value, as on a cluster where nothing of the project is installed."""

from __future__ import annotations

import pytest

from tests.helpers import free_port
from tests.integration.batch.helpers import BAD, GOOD, assert_same_rows, batch
from tests.spark_cluster import standalone_cluster

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
if os.path.exists(os.path.join(os.environ["HIDDEN_MARKS"], os.pardir, "no-torch")):
    class NoTorch:  # a cluster whose Python lacks one of the model's requirements
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torch":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, NoTorch())
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(master URL, the marks folder, the worker's work folder)."""
    directory = tmp_path_factory.mktemp("spark-cluster")
    hidden, marks = directory / "hidden", directory / "marks"
    for folder in (hidden, marks):
        folder.mkdir()
    (hidden / "sitecustomize.py").write_text(HIDE_THE_PROJECT)
    with standalone_cluster(directory, worker_env={"PYTHONPATH": str(hidden), "HIDDEN_MARKS": str(marks)}) as url:
        yield url, marks, directory / "work-0"


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


def test_a_cluster_without_the_models_requirements_fails_with_the_first_cause(
    cluster, store_uri, photo_folder, tmp_path
):
    """Executors whose Python lacks torch: one line naming the missing module, no trace of Spark's."""
    url, marks, _ = cluster
    flag = marks.parent / "no-torch"  # read by each new executor's Python workers at start
    flag.touch()
    try:
        output = tmp_path / "scores"
        args = ["--engine", "spark", "--master", url, "--input", str(photo_folder), "--output", str(output)]
        result = batch(store_uri, *args, SPARK_LOCAL_IP="127.0.0.1")
    finally:
        flag.unlink()
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("mnist-batch:")]
    assert len(lines) == 1 and "torch" in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "at org.apache" not in result.stderr, result.stderr[-3000:]
    assert not output.exists()


def test_a_master_that_is_not_there_stops_the_job_with_one_line_naming_it(store_uri, photo_folder, tmp_path):
    nobody = f"spark://127.0.0.1:{free_port()}"
    args = ["--engine", "spark", "--master", nobody, "--input", str(photo_folder), "--output", str(tmp_path / "o")]
    result = batch(store_uri, *args)
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"mnist-batch: error: cannot reach the Spark master at {nobody}")
    )
    assert "Traceback" not in result.stderr
