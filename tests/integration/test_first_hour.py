"""The first hour of a new user: every wrong first step, run as a user runs it (real commands and
``make`` targets, a fresh working folder and store), answered with one readable line, a non-zero
exit status, and nothing written that should not be."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, VENV_BIN, subprocess_env


def run(args: list[str], cwd: Path, uri: str | None = None, timeout: float = 300, **env: str):
    return subprocess.run(
        args, cwd=cwd, env=subprocess_env(uri, **env), capture_output=True, text=True, timeout=timeout
    )


def one_line(result: subprocess.CompletedProcess, prefix: str) -> str:
    """The one line a command printed for a wrong step (and no traceback)."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_make_serve_before_any_model_says_what_to_do_and_creates_no_store(tmp_path):
    store = tmp_path / "mlflow.db"
    result = run(["make", "-s", "-C", str(PROJECT_ROOT), "serve"], tmp_path, f"sqlite:///{store}")
    line = one_line(result, "make serve: error:")
    assert "no tracking store" in line and "make quickstart" in line
    assert not store.exists()


def test_make_serve_names_a_missing_model_and_a_busy_port(trained_store, tmp_path):
    uri = trained_store.copy_to(tmp_path / "store")
    preflight = [sys.executable, "-m", "mnist_mlops.serve.preflight"]
    missing = run([*preflight, "--model_uri", "models:/not-trained@champion"], tmp_path, uri)
    assert "no registered model named 'not-trained'" in one_line(missing, "make serve: error:")
    no_alias = run([*preflight, "--model_uri", "models:/mnist-cnn@shadow"], tmp_path, uri)
    assert "has no alias 'shadow'" in one_line(no_alias, "make serve: error:")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        taken = run([*preflight, "--port", port], tmp_path, uri)
    assert f"port {port} is in use" in one_line(taken, "make serve: error:")


def test_the_registry_on_an_empty_folder_names_the_missing_store_not_the_data(tmp_path):
    store = tmp_path / "mlflow.db"
    result = run([str(VENV_BIN / "mnist-registry"), "promote", "challenger", "--force"], tmp_path, f"sqlite:///{store}")
    line = one_line(result, "mnist-registry: error:")
    assert "no tracking store" in line and "MNIST" not in line
    assert not store.exists()


def test_promote_without_a_model_blames_the_model_before_the_data(trained_store, tmp_path):
    uri = trained_store.copy_to(tmp_path / "store")
    result = run(
        [str(VENV_BIN / "mnist-registry"), "--model", "not-trained", "promote", "challenger", "--force"],
        tmp_path,
        uri,
        MNIST_DATA_DIR=str(tmp_path / "no-data-here"),
    )
    assert "no registered model named 'not-trained'" in one_line(result, "mnist-registry: error:")


@pytest.mark.parametrize("files", [[], ["notes.txt", "a.doc", "b.csvx", "c.md"]], ids=["empty", "no-images"])
def test_batch_with_nothing_to_score_says_so_and_writes_nothing(trained_store, tmp_path, files):
    folder = tmp_path / "inbox"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("not an image")
    output = tmp_path / "scores.parquet"
    uri = trained_store.copy_to(tmp_path / "store")
    result = run([str(VENV_BIN / "mnist-batch"), "--input", str(folder), "--output", str(output)], tmp_path, uri)
    line = one_line(result, "mnist-batch: error:")
    if files:
        assert "skipped 4 files" in line and "a.doc" in line and "and 1 more" in line
    else:
        assert "is empty" in line
    assert not output.exists()


def test_a_mistyped_mlproject_parameter_is_refused_not_taken_for_another(tmp_path):
    """``-P epoch=1``: MLflow passes an undeclared parameter on as ``--epoch 1``, which argparse's
    prefix matching used to take for ``--epochs``."""
    result = run(
        [str(VENV_BIN / "mlflow"), "run", str(PROJECT_ROOT), "--env-manager", "local", "-P", "epoch=1"],
        tmp_path,
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert result.returncode != 0
    assert "mnist-train: error: unrecognized arguments: --epoch 1" in result.stderr


def test_training_without_data_leaves_no_folders_and_quotes_the_whole_error(tmp_path):
    typo = tmp_path / "mistyped" / "data"
    result = run(
        [str(VENV_BIN / "mnist-train"), "--data_dir", str(typo), "--register", "false"],
        tmp_path,
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    line = one_line(result, "mnist-train: error:")
    assert "could not be downloaded" in line and "set MNIST_DATA_DIR" in line
    assert not (tmp_path / "mistyped").exists()


def test_the_gateways_help_names_the_keys_command(tmp_path):
    result = run([str(VENV_BIN / "mnist-gateway"), "--help"], tmp_path)
    assert result.returncode == 0 and "mnist-gateway keys add" in result.stdout
