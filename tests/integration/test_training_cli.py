"""``mnist-train`` as a user runs it: further versions, register=false, bad input, interruption."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from tests.helpers import PROJECT_ROOT, start_process, stop_process, subprocess_env

# Smaller still than the session's training: these tests check plumbing, not quality.
SMALL = [
    "--epochs",
    "1",
    "--max_train_samples",
    "512",
    "--val_samples",
    "256",
    "--batch_size",
    "64",
    "--card_samples",
    "0",
]


def train(uri: str, *args: str, cwd=PROJECT_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_mlops.train", *SMALL, *args],
        cwd=cwd,
        env=subprocess_env(uri),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_second_run_becomes_challenger_and_leaves_the_champion(trained_store, tmp_path):
    uri = trained_store.copy_to(tmp_path)
    result = train(uri)
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(uri, uri)
    assert str(client.get_model_version_by_alias("mnist-cnn", "challenger").version) == "2"
    assert str(client.get_model_version_by_alias("mnist-cnn", "champion").version) == "1"
    stages = {str(v.version): v.current_stage for v in client.search_model_versions("name = 'mnist-cnn'")}
    assert stages == {"1": "Production", "2": "Staging"}
    assert "registered mnist-cnn version 2" in result.stdout
    assert "mlflow ui --backend-store-uri" in result.stdout


def test_a_first_version_below_the_gate_is_registered_but_not_made_champion(tmp_path):
    """One optimisation step: a model near chance says so, is registered as challenger, and serves
    no traffic until someone promotes it on purpose (the history says why)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train(uri, "--max_train_samples", "64")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "the network learned next to nothing" in result.stderr
    assert "only 1 optimisation steps" in result.stderr
    (refusal,) = [line for line in result.stdout.splitlines() if line.startswith("not made champion:")]
    assert "below the promotion gate's minimum 0.9700" in refusal and "--force" in refusal
    client = MlflowClient(uri, uri)
    assert {a: str(v) for a, v in client.get_registered_model("mnist-cnn").aliases.items()} == {"challenger": "1"}
    from mnist_mlops.registry.history import read

    assert [e.action for e in read(client, "mnist-cnn")] == ["register", "gate-refused"]
    run = client.get_run(client.get_model_version("mnist-cnn", "1").run_id)
    assert "learned next to nothing" in run.data.tags["warning"]


def test_register_false_logs_the_run_but_registers_nothing(trained_store, tmp_path):
    uri = trained_store.copy_to(tmp_path)
    result = train(uri, "--register", "false")
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(uri, uri)
    assert [str(v.version) for v in client.search_model_versions("name = 'mnist-cnn'")] == ["1"]


def test_an_unusable_tracking_store_stops_with_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = train(f"sqlite:///{blocker}/mlflow.db")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mnist-train: error: cannot use the tracking store")
    assert "MLFLOW_TRACKING_URI" in lines[0]


def test_a_corrupt_data_folder_stops_with_one_line_before_any_run(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (raw / name).write_bytes(b"\x00\x00\x08\x03 garbage")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train(uri, "--data_dir", str(tmp_path / "data"))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "corrupt" in lines[0], result.stderr
    assert MlflowClient(uri, uri).search_runs(["0"]) == []


@pytest.mark.parametrize(
    ("sig", "code", "how"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
    ids=["ctrl-c", "sigterm"],
)
def test_an_interrupted_run_is_marked_failed_and_registers_nothing(tmp_path, sig, code, how):
    """Ctrl-C, or SIGTERM from ``kill`` or a container stop, during training: the run ends as
    failed, nothing is registered, one line says so, and the exit code is the shell's 128 + N."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        sys.executable,
        "-m",
        "mnist_mlops.train",
        "--epochs",
        "50",
        "--max_train_samples",
        "2000",
        "--val_samples",
        "256",
    ]
    process = start_process(args, subprocess_env(uri), tmp_path / "train.log")
    deadline = time.monotonic() + 300
    while "epoch 1/50" not in (tmp_path / "train.log").read_text() and time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "train.log").read_text()
        time.sleep(0.5)
    returncode = stop_process(process, sig=sig)
    log = (tmp_path / "train.log").read_text()
    assert returncode == code, log
    assert f"{how}; the run is marked failed and nothing was registered" in log
    assert "Traceback" not in log
    client = MlflowClient(uri, uri)
    (run,) = client.search_runs(["0"])
    assert run.info.status == "FAILED"
    assert client.search_registered_models() == []


def test_an_invalid_parameter_through_mlflow_run_fails_without_registering(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        ["mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local", "-P", "epochs=-2"],
        cwd=tmp_path,
        env=subprocess_env(uri),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "mnist-train: error: argument --epochs: expected a whole number >= 1, got '-2'" in result.stderr
    assert MlflowClient(uri, uri).search_registered_models() == []
