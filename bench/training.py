"""Training: our loop with MLflow tracking on against the same loop with tracking off (same data,
same seed, in the same run), and, in the full mode, the default full run's accuracy and time beside
the quick variant's."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow

from bench import processes
from bench.core import BenchError, Figure, Mode, mnist_test, ratio
from mnist_mlops.train.data import prepare, resolve_data_dir
from mnist_mlops.train.evaluation import test_report
from mnist_mlops.train.loop import Hyperparameters, pick_device, train
from mnist_mlops.train.tracking import RunLogger


def _session(samples: int, tracked: bool) -> float:
    """Images per second of one short training session, end to end (training, test, logging)."""
    data = prepare(resolve_data_dir(None), 5000, 1, samples)
    hp = Hyperparameters(epochs=1, batch_size=128, lr=0.1, weight_decay=5e-4, seed=1)
    device = pick_device()
    started = time.perf_counter()
    if not tracked:
        model = train(data, hp, device=device)
        test_report(model, data.test, device)
        return len(data.train) / (time.perf_counter() - started)
    from mnist_mlops.train.config import TrainConfig
    from mnist_mlops.train.export import log_model

    tracker = RunLogger()
    with mlflow.start_run():
        tracker.start(TrainConfig(epochs=1, max_train_samples=samples), data, str(device), Path.cwd())
        model = train(data, hp, on_epoch=tracker.epoch, device=device)
        report = test_report(model, data.test, device)
        tracker.finish(report, data.test.images.numpy(), data.test.labels.numpy())
        with tracker.timed():
            log_model(model.cpu(), data.test.images[0].numpy())
    return len(data.train) / (time.perf_counter() - started)


def tracking_overhead(mode: Mode) -> list[Figure]:
    directory = tempfile.mkdtemp(prefix="mnist-bench-train-")
    mlflow.set_tracking_uri(f"sqlite:///{directory}/mlflow.db")
    # Artifacts beside the store: a new experiment's default, ./mlruns, is the caller's folder.
    artifacts = (Path(directory) / "artifacts").as_uri()
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench-training", artifacts))
    samples = mode.count(20_000, 2_000)
    off = [_session(samples, tracked=False), _session(samples, tracked=False)]
    on = [_session(samples, tracked=True), _session(samples, tracked=True)]
    rate_off, rate_on = max(off), max(on)
    return [
        Figure(
            "training",
            f"training session, tracking off ({samples} images, 1 epoch)",
            rate_off,
            "images/s",
            {"runs": [round(r, 1) for r in off]},
        ),
        Figure(
            "training",
            f"training session, MLflow tracking on ({samples} images, 1 epoch)",
            rate_on,
            "images/s",
            {"runs": [round(r, 1) for r in on]},
        ),
    ]


# The quick variant the README names for a first look (``make quickstart EPOCHS=1 CARD_SAMPLES=50``).
QUICK_VARIANT = ("--epochs", "1", "--card_samples", "50")


def _training_run(name: str, *args: str) -> tuple[dict, float]:
    """(the metrics of a real ``mnist-train`` run with ``args``, its process's wall time)."""
    directory = Path(tempfile.mkdtemp(prefix=f"mnist-bench-{name}-"))
    uri = f"sqlite:///{directory}/mlflow.db"
    # Absolute: the run starts in its own folder, where a relative MNIST_DATA_DIR would not resolve.
    data_dir = Path(os.environ.get("MNIST_DATA_DIR", "data")).resolve()
    env = processes.environment(uri, MNIST_DATA_DIR=str(data_dir))
    started = time.perf_counter()
    command = [sys.executable, "-m", "mnist_mlops.train", *args]
    result = subprocess.run(command, env=env, cwd=directory, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise BenchError(f"the {name} training run failed: {result.stderr[-300:]}")
    client = mlflow.MlflowClient(uri, uri)
    (run,) = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    return run.data.metrics, wall


def full_runs(mode: Mode) -> list[Figure]:
    """The default ``mnist-train`` and the quick variant, one after the other (full mode only: the
    default takes minutes to tens of minutes, by the machine)."""
    if mode.quick:
        return []
    figures = []
    walls = {}
    for name, args in (("default full run", ()), ("quick variant (1 epoch, card of 50)", QUICK_VARIANT)):
        metrics, wall = _training_run(name.split(" ")[0], *args)
        walls[name] = wall
        detail = {"args": list(args), "tracking_overhead_fraction": metrics["tracking_overhead_fraction"]}
        figures += [
            Figure("training", f"{name}: test accuracy", metrics["test_accuracy"], "fraction"),
            Figure(
                "training",
                f"{name}: wall time of the command",
                wall,
                "s",
                detail | {"run_seconds": metrics["run_seconds"]},
            ),
        ]
    quick, default = figures[3], figures[1]
    figures.append(ratio("training: quick variant / default run, wall time", quick, default))
    return figures


def measure(mode: Mode) -> list[Figure]:
    mnist_test(1)  # fail early, with torchvision's message, when MNIST is missing
    return tracking_overhead(mode) + full_runs(mode)
