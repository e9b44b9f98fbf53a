"""``mnist-gateway keys add`` as an operator runs it: names from a fixed character set (a name is
written into TOML), the keys file created 0600 and tightened if it was not, a name never twice,
a gateway on a non-loopback address over plain HTTP warned about at start-up, and a database
URL's password never printed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mnist_mlops.serve.gateway.auth import load_keys
from tests.helpers import free_port, subprocess_env


def keys(*args: str, cwd) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mnist_mlops.serve.gateway.cli", "keys", "add", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", ["bad name", 'x"\nrole = "admin', "", "_starts-with-underscore", "é"])
def test_a_key_name_outside_the_character_set_is_refused_in_one_line(tmp_path, name):
    result = keys(name, "--role", "predict", "--file", "keys.toml", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "letters, digits and _ . @ -" in result.stderr
    assert not (tmp_path / "keys.toml").exists()


def test_the_keys_file_is_private_holds_hashes_and_never_a_name_twice(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text("")
    path.chmod(0o644)  # made by hand, readable by others: tightened at the next add
    added = keys("batch-job", "--role", "labeler", "--file", "keys.toml", "--rate_per_minute", "60", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("mnk_") and key not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    (entry,) = load_keys(path)
    assert (entry.name, entry.role, entry.limits.rate_per_minute) == ("batch-job", "labeler", 60)
    again = keys("batch-job", "--file", "keys.toml", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a key named 'batch-job'" in again.stderr
    assert len(load_keys(path)) == 1


def test_plain_http_on_a_non_loopback_address_is_warned_about(tmp_path):
    """Checked at start-up, before anything else: the warning comes even when the gateway then
    stops for another reason (here: a keys file that does not exist)."""
    command = [sys.executable, "-m", "mnist_mlops.serve.gateway.cli", "--host", "0.0.0.0", "--api_keys", "none.toml"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "plain HTTP on 0.0.0.0" in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_inference_log_is_one_line_that_never_shows_its_password(tmp_path):
    """A team's log URL comes from $MNIST_INFERENCE_LOG (off the command line) and holds the
    database password: the start-up error names the database, with the password masked."""
    url = f"postgresql+psycopg://mlflow:not-for-any-eyes@127.0.0.1:{free_port()}/mnist_inference"
    command = [
        sys.executable,
        "-m",
        "mnist_mlops.serve.gateway.cli",
        "--no_auth",
        "--backend_user",
        "root",
        "--tracking_uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    env = subprocess_env(MNIST_INFERENCE_LOG=url)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    error = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(error) == 1, result.stderr
    assert "cannot open the inference log postgresql+psycopg://mlflow:***@127.0.0.1" in error[0]
    assert "not-for-any-eyes" not in result.stderr + result.stdout and "Traceback" not in result.stderr
