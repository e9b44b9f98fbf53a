"""A job's edges: outputs that cannot be written or already exist, bad options, nothing to score,
SIGTERM, and the MLproject entry point with its MLflow run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.helpers import (
    PROJECT_ROOT,
    png_bytes,
    subprocess_env,
)
from tests.integration.batch.helpers import BAD, GOOD, batch, wait_for


def test_a_job_stopped_by_sigterm_leaves_no_output_and_no_worker_behind(store_uri, digits, tmp_path):
    images, _ = digits
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3000):
        (folder / f"digit-{i:05d}.png").write_bytes(png_bytes(images[i % len(images)]))
    output = tmp_path / "scores.parquet"
    args = [sys.executable, "-m", "mnist_mlops.serve.batch", "--input", str(folder), "--output", str(output)]
    job = subprocess.Popen(
        [*args, "--workers", "2", "--chunk_rows", "8"],
        env=subprocess_env(store_uri),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(lambda: len(_processes_in_group(job.pid)) >= 4)  # the job, the forkserver, two workers
    time.sleep(1.0)  # scoring
    job.send_signal(signal.SIGTERM)  # to the job alone, as `kill` sends it
    assert job.wait(timeout=60) == 130
    assert "interrupted" in job.stderr.read()
    assert not output.exists() and not list(tmp_path.glob("*.partial"))
    wait_for(lambda: not _processes_in_group(job.pid), timeout=30)


def _processes_in_group(group: int) -> list[int]:
    """Live processes of a process group (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    ("engine", "where", "message"),
    [
        ("--engine=pandas", "a-file", "is not a folder"),
        ("--engine=pandas", "/proc", "cannot write the output /proc/scores"),
        ("--engine=spark", "/proc", "cannot write the output /proc/scores"),
        ("--watch", "/proc", "cannot write the output /proc/scores"),
    ],
    ids=["pandas-under-a-file", "pandas-in-proc", "spark-in-proc", "watch-in-proc"],
)
def test_an_output_that_cannot_be_written_stops_the_job_with_one_line(
    store_uri, photo_folder, tmp_path, engine, where, message
):
    """Under a file, or in /proc: a place whose permission bits may say yes (to root) where
    writing fails. Found before any scoring, for every engine: nothing is left behind."""
    if where == "a-file":
        (tmp_path / where).write_text("a file")
    output = (tmp_path / where if where == "a-file" else Path(where)) / "scores"
    source = [engine, str(photo_folder)] if engine == "--watch" else [engine, "--input", str(photo_folder)]
    result = batch(store_uri, *source, "--output", str(output))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert (tmp_path / where).is_file() if where == "a-file" else not output.exists()


def test_the_mlproject_entry_point_scores_a_folder(store_uri, photo_folder, tmp_path):
    output = tmp_path / "scores.parquet"
    result = subprocess.run(
        [
            "mlflow",
            "run",
            str(PROJECT_ROOT),
            "-e",
            "batch_score",
            "--env-manager",
            "local",
            "-P",
            f"input={photo_folder}",
            "-P",
            f"output={output}",
        ],
        cwd=tmp_path,
        env=subprocess_env(store_uri),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_parquet(output)
    assert len(rows) == GOOD + BAD
    # The run `mlflow run` made holds what the job did: the version the alias resolved to, the
    # counts and the throughput, beside the entry point's own parameters.
    client = MlflowClient(tracking_uri=store_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, "tags.`mlflow.project.entryPoint` = 'batch_score'")
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "models:/mnist-cnn@champion"
    assert run.data.params["model_version"] == "1" and run.data.params["model_run_id"] == rows["run_id"][0]
    metrics = run.data.metrics
    assert (metrics["scored"], metrics["failed"]) == (GOOD, BAD)
    assert metrics["images_per_second"] > 0 and metrics["seconds"] >= metrics["startup_seconds"] > 0


def test_a_job_handed_a_run_the_store_does_not_know_warns_and_still_publishes(store_uri, photo_folder, tmp_path):
    """``MLFLOW_RUN_ID`` left over from another store, say: the scores are written and the exit
    status is 0; one warning names the run. A plain job (no such variable) creates no run."""
    output = tmp_path / "scores.parquet"
    client = MlflowClient(tracking_uri=store_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs_before = len(client.search_runs(experiments))
    result = subprocess.run(
        [sys.executable, "-m", "mnist_mlops.serve.batch", "--input", str(photo_folder), "--output", str(output)],
        cwd=PROJECT_ROOT,
        env=subprocess_env(store_uri, MLFLOW_RUN_ID="0123456789abcdef0123456789abcdef"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(pd.read_parquet(output)) == GOOD + BAD
    warnings = [line for line in result.stderr.splitlines() if "could not log" in line]
    assert len(warnings) == 1 and "0123456789abcdef0123456789abcdef" in warnings[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert batch(store_uri, "--input", str(photo_folder), "--output", str(tmp_path / "plain.parquet")).returncode == 0
    assert len(client.search_runs(experiments)) == runs_before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "/no/such/folder"], "input /no/such/folder does not exist"),
        (["--input", "README.md"], "expected a folder of images, an image file (.bmp, .gif"),
        (["--model", "models:/mnist-cnn@nobody"], "cannot resolve models:/mnist-cnn@nobody"),
        (["--model", "models:/no-such-model/1"], "cannot resolve models:/no-such-model/1"),
        (["--chunk_rows", "0"], "expected a whole number >= 1"),
        (["--engine", "spark", "--master", "nope://x"], "expected a Spark master URL (local, local[N]"),
        (["--output", ""], "argument --output: expected a path, got an empty one"),
        (["--master", "spark://host:7077"], "--master applies only to --engine spark"),
    ],
)
def test_bad_jobs_stop_with_one_line_and_write_nothing(store_uri, photo_folder, tmp_path, args, message):
    output = tmp_path / "scores.parquet"
    arguments = ["--input", str(photo_folder), "--output", str(output), *args]
    result = batch(store_uri, *arguments)
    assert result.returncode in (1, 2)
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not output.exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("engine", [[], ["--engine", "spark"]], ids=["pandas", "spark"])
def test_overwrite_never_deletes_the_input_or_a_users_folder(store_uri, photo_folder, tmp_path, engine):
    """--overwrite replaces a job's output; an output naming the input, the folder holding it, one
    of its images, or (Spark) a folder no job wrote is refused before anything is scored."""
    before = sorted(p.name for p in photo_folder.rglob("*"))
    mine = tmp_path / "my folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    outputs = {
        photo_folder: "would replace the input",
        photo_folder.parent: "would replace the input",
        photo_folder / "digit-01.png": "in the input folder under an image's name",
        mine: "no Spark job completed" if engine else "is a folder; this engine writes one file",
    }
    for output, message in outputs.items():
        result = batch(store_uri, *engine, "--input", str(photo_folder), "--output", str(output), "--overwrite")
        lines = [line for line in result.stderr.splitlines() if "error" in line]
        assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert sorted(p.name for p in photo_folder.rglob("*")) == before
    assert (photo_folder / "digit-01.png").read_bytes()[:4] == b"\x89PNG"
    assert (mine / "notes.txt").read_text() == "mine"


def test_an_existing_output_is_refused_unless_overwrite(store_uri, photo_folder, tmp_path):
    output = tmp_path / "scores.parquet"
    output.write_text("precious")
    result = batch(store_uri, "--input", str(photo_folder), "--output", str(output))
    assert result.returncode == 1 and "already exists; pass --overwrite" in result.stderr
    assert output.read_text() == "precious"
    assert batch(store_uri, "--input", str(photo_folder), "--output", str(output), "--overwrite").returncode == 0
    assert len(pd.read_parquet(output)) == GOOD + BAD


def test_a_job_where_nothing_can_be_scored_exits_non_zero_with_the_summary(store_uri, tmp_path):
    inbox = tmp_path / "bad"
    inbox.mkdir()
    (inbox / "a.png").write_bytes(b"nope")
    result = batch(store_uri, "--input", str(inbox), "--output", str(tmp_path / "out.parquet"))
    assert result.returncode == 1
    assert "scored 0, failed 1" in result.stdout
    assert "nothing could be scored" in result.stderr
