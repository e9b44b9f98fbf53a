"""Command lines answer ``--help`` and a bad option before they import torch or MLflow.

Those imports take seconds; a person asking for help, or a typo in a script, should not wait for
them. Each case runs in a fresh interpreter and lists the heavy modules loaded by the time the
command line has answered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import PROJECT_ROOT

HEAVY = ("torch", "mlflow", "pandas", "pyspark")
CASES = {
    "mnist-train --help": ("mnist_mlops.train.cli", ["--help"], 0),
    "mnist-train bad option": ("mnist_mlops.train.cli", ["--epochs", "x"], 2),
    "mnist-gateway --help": ("mnist_mlops.serve.gateway.cli", ["--help"], 0),
    "mnist-gateway bad option": ("mnist_mlops.serve.gateway.cli", ["--port", "x"], 2),
    "mnist-batch --help": ("mnist_mlops.serve.batch.cli", ["--help"], 0),
    "mnist-registry --help": ("mnist_mlops.registry.cli", ["--help"], 0),
    "mnist-registry promote --help": ("mnist_mlops.registry.cli", ["promote", "--help"], 0),
    "mnist-registry bad option": ("mnist_mlops.registry.cli", ["promote", "3", "--tolerance", "x"], 2),
    "mnist-team-server --help": ("mnist_mlops.registry.team_server", ["start", "--help"], 0),
    "mnist-team-server bad option": ("mnist_mlops.registry.team_server", ["start", "--dir", "x", "--port", "x"], 2),
}


@pytest.mark.parametrize(("module", "argv", "code"), CASES.values(), ids=CASES.keys())
def test_the_command_line_answers_before_importing_the_heavy_libraries(module, argv, code):
    script = (
        "import importlib, json, sys\n"
        f"main = importlib.import_module({module!r}).main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    status = exc.code or 0\n"
        f"print(json.dumps([status, [m for m in {HEAVY!r} if m in sys.modules]]), file=sys.stderr)\n"
    )
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    status, loaded = json.loads(result.stderr.strip().splitlines()[-1])
    assert status == code, result.stderr[-2000:]
    assert loaded == [], f"{module} {argv} imported {loaded} before answering"


DTYPE_CASES = {
    "mnist-gateway": ("mnist_mlops.serve.gateway.cli", ["--no_auth"]),
    "mnist-batch": ("mnist_mlops.serve.batch.cli", ["--input", "photos", "--output", "scores.parquet"]),
}


@pytest.mark.parametrize(("module", "argv"), DTYPE_CASES.values(), ids=DTYPE_CASES.keys())
def test_an_unknown_number_type_is_refused_in_one_line_before_any_model_loads(module, argv, tmp_path):
    """``MNIST_TORCH_DTYPE=float16``: every model these commands load would fail; they say so at once."""
    env = {**os.environ, "MNIST_TORCH_DTYPE": "float16"}
    command = [sys.executable, "-m", module, *argv]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1, result.stderr
    assert "MNIST_TORCH_DTYPE is 'float16'; expected one of float32, bfloat16, auto" in result.stderr
