"""The batch tests' constants and ``mnist-batch`` run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tests.helpers import (
    PROJECT_ROOT,
    subprocess_env,
)

GOOD = 12


OVERSIZED = {"big.png": 25 * 1024 * 1024 + 1, "huge.png": 2**31 + 1}


BAD = 2 + len(OVERSIZED)  # the corrupt file, the blank image and the oversized files


# Folder names a URI would encode and Hadoop would read as globs: ids are the paths as the file
# system spells them.
ROOT, NESTED = "phone photos ü%20 [1] {a,b}", "nested dir ü%20 [2]"


def batch(uri: str, *args: str, cwd: Path = PROJECT_ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_mlops.serve.batch", *args],
        cwd=cwd,
        env=subprocess_env(uri, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def expected_label(digits, file_id: str) -> int:
    return int(digits[1][int(Path(file_id).stem.split("-")[1])])


def assert_same_rows(first: Path, second: Path) -> pd.DataFrame:
    """The two outputs hold the same rows (ids, labels, errors, probabilities); the first's rows."""
    a = pd.read_parquet(first).sort_values("id").reset_index(drop=True)
    b = pd.read_parquet(second).sort_values("id").reset_index(drop=True)
    assert a["id"].tolist() == b["id"].tolist()
    pd.testing.assert_series_equal(a["label"], b["label"], check_dtype=False)
    pd.testing.assert_series_equal(a["error"], b["error"], check_dtype=False)
    for p, q in zip(a["probabilities"], b["probabilities"], strict=True):
        if p is None:
            assert q is None
        else:
            np.testing.assert_allclose(p, q, atol=1e-9)
    assert set(b["model_version"]) == {"1"}
    return a


def registered_model_copy(store_uri: str, folder: Path) -> Path:
    """A local copy of the registered model's version 1, for a test to alter."""
    import mlflow

    source = mlflow.MlflowClient(store_uri, store_uri).get_model_version_download_uri("mnist-cnn", "1")
    return Path(mlflow.artifacts.download_artifacts(source, dst_path=str(folder), tracking_uri=store_uri))


ENGINE_IDS = ["in-process", "worker-processes", "spark"]


def engines(spark_master: str) -> list[list[str]]:
    """The flags of each engine, in ``ENGINE_IDS`` order."""
    return [["--workers", "1"], ["--workers", "2"], ["--engine", "spark", "--master", spark_master]]


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
