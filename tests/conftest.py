"""Session fixtures: one real tiny training (``mlflow run``) shared by every test that needs a model.

Tests that change the registry work on their own copy of the session's SQLite store (the database
file is copied; the model artifacts it points at are shared read-only). Under pytest-xdist (``make
test`` runs two worker processes) the trainings are still run once per session: see ``built_once``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
from filelock import FileLock
from mlflow import MlflowClient
from torchvision.datasets import MNIST

from mnist_mlops.train.export import save_model
from tests.fullmodel import full_network, full_temperature
from tests.helpers import PROJECT_ROOT, mnist_dir, subprocess_env

MODEL_NAME = "mnist-cnn"
# A couple of thousand images, two short epochs: about 95% test accuracy in seconds.
TINY_PARAMS = {
    "epochs": "2",
    "batch_size": "32",
    "lr": "0.05",
    "seed": "7",
    "val_samples": "1000",
    "max_train_samples": "3000",
    "model_name": MODEL_NAME,
    "card_samples": "20",
    "champion_gate": "0",  # the tiny model (about 95%) serves the tests as champion
}


@dataclass(frozen=True)
class TrainedStore:
    """A tracking store holding one tiny training run, registered as version 1."""

    directory: Path
    run_id: str
    params: dict[str, str]
    model_name: str = MODEL_NAME

    @property
    def db_path(self) -> Path:
        return self.directory / "mlflow.db"

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.db_path}"

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def copy_to(self, directory: Path) -> str:
        """A private copy of the store's database (for tests that change the registry): its URI."""
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.db_path, directory / "mlflow.db")
        return f"sqlite:///{directory / 'mlflow.db'}"


def run_checked(args: list[str], env: dict[str, str], cwd: Path, log: Path, timeout: float = 900) -> str:
    with open(log, "wb") as out:
        result = subprocess.run(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    text = log.read_text(errors="replace")
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args[:3])} failed ({result.returncode}):\n{text[-4000:]}")
    return text


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder filled by ``build`` once per test session, shared read-only by whoever asks for it.

    Under pytest-xdist every worker process has its own session fixtures, so a session fixture
    would train once per worker. Here the first worker to ask builds the folder (under a file
    lock, in the temporary folder all workers of this session share) and the others wait for it
    and reuse it. Without xdist it is an ordinary session folder.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        directory = tmp_path_factory.mktemp(name)
        build(directory)
        return directory
    shared = tmp_path_factory.getbasetemp().parent  # this session's, one folder per worker inside
    directory, done = shared / name, shared / f"{name}.done"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)  # a worker's failed attempt
            directory.mkdir()
            build(directory)
            done.touch()
    return directory


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one torch thread per process: the workers' and every process they start.

    Each torch process otherwise runs as many OpenMP threads as there are cores, and those spin
    while they wait for each other; with two test workers, their servers, trainings and Spark
    sharing two cores, the spinning threads starve one another. Measured beside one busy loop on
    two cores, one epoch of the tiny training: 217 images/s with two threads, 697 with one (1,389
    and 827 alone); in a suite run the session's training ran at 92 images/s. Batch scoring's
    workers and Spark's set their own thread count, as before. A caller's OMP_NUM_THREADS wins.
    Set here, in the controlling process, before the workers are started: they inherit it, and
    torch reads it when it is imported.
    """
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")


_SESSION_STARTED = time.time()


def pytest_terminal_summary(terminalreporter) -> None:
    """The screenshots the browser tests wrote in this run (tests/e2e/test_web.py), by path."""
    folder = PROJECT_ROOT / "build" / "screenshots"
    written = sorted(path for path in folder.glob("*.png") if path.stat().st_mtime >= _SESSION_STARTED)
    if written:
        terminalreporter.section("screenshots of the web pages")
        for path in written:
            terminalreporter.write_line(str(path.relative_to(PROJECT_ROOT)))


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = mnist_dir()
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.fail(f"MNIST is not under {root}; set MNIST_DATA_DIR (CI sets ../shared/data)")
    return root


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory, mnist_root) -> TrainedStore:
    """The real ``mlflow run . --env-manager local`` on a small subset, against a fresh SQLite store."""

    def train(directory: Path) -> None:
        args = ["mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local", "--experiment-name", "tests"]
        for key, value in TINY_PARAMS.items():
            args += ["-P", f"{key}={value}"]
        env = subprocess_env(f"sqlite:///{directory / 'mlflow.db'}")
        run_checked(args, env, cwd=directory, log=directory / "mlflow-run.log")

    directory = built_once(tmp_path_factory, "trained-store", train)
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("tests")
    (run,) = client.search_runs([experiment.experiment_id])
    return TrainedStore(directory=directory, run_id=run.info.run_id, params=dict(TINY_PARAMS))


@pytest.fixture(scope="session")
def mnist_test(mnist_root) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images (uint8, 28x28) and labels."""
    test = MNIST(str(mnist_root), train=False)
    return test.data.numpy(), test.targets.numpy()


@pytest.fixture(scope="session")
def full_model_path(tmp_path_factory, mnist_test) -> Path:
    """The full model saved as the real pyfunc, in a local folder."""
    path = tmp_path_factory.mktemp("full-model") / "model"
    save_model(full_network(), mnist_test[0][0], path, full_temperature())
    return path


@pytest.fixture(scope="session")
def full_model(full_model_path):
    return mlflow.pyfunc.load_model(str(full_model_path))


@dataclass(frozen=True)
class LoggedModel:
    """A model logged by a real training run: enough to register it as a version anywhere."""

    source: str  # the logged model's artifact location
    run_id: str
    test_accuracy: float


@pytest.fixture(scope="session")
def weak_model(tmp_path_factory, mnist_root) -> LoggedModel:
    """A deliberately weak model (one epoch on 300 images): a real, clearly worse candidate."""
    args = [
        sys.executable,
        "-m",
        "mnist_mlops.train",
        "--epochs",
        "1",
        "--max_train_samples",
        "300",
        "--batch_size",
        "32",
        "--lr",
        "0.05",
        "--val_samples",
        "500",
        "--seed",
        "3",
        "--register",
        "false",
        "--card_samples",
        "0",
    ]

    def train(directory: Path) -> None:
        env = subprocess_env(f"sqlite:///{directory / 'mlflow.db'}")
        run_checked(args, env, cwd=directory, log=directory / "train.log")

    directory = built_once(tmp_path_factory, "weak-model", train)
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    (run,) = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    (model,) = client.search_logged_models([run.info.experiment_id])
    return LoggedModel(model.artifact_location, run.info.run_id, run.data.metrics["test_accuracy"])


@pytest.fixture(scope="session")
def tiny_model(trained_store) -> LoggedModel:
    client = trained_store.client()
    version = client.get_model_version(trained_store.model_name, "1")
    logged = client.get_logged_model(version.model_id or version.source.removeprefix("models:/"))
    return LoggedModel(logged.artifact_location, version.run_id, float(version.tags["test_accuracy"]))
