"""Training: our loop with MLflow tracking on against the same loop with tracking off (same data,
same seed, in the same run), and, in the full mode, the default full run's accuracy and time."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow

from bench import processes
from bench.core import BenchError, Figure, Mode, mnist_test
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


def full_run(mode: Mode) -> list[Figure]:
    """The default `mnist-train` (full mode only: about nine minutes on two cores)."""
    if mode.quick:
        return []
    directory = Path(tempfile.mkdtemp(prefix="mnist-bench-full-"))
    uri = f"sqlite:///{directory}/mlflow.db"
    # Absolute: the run starts in its own folder, where a relative MNIST_DATA_DIR would not resolve.
    data_dir = Path(os.environ.get("MNIST_DATA_DIR", "data")).resolve()
    env = processes.environment(uri, MNIST_DATA_DIR=str(data_dir))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "train"], env=env, cwd=directory, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise BenchError(f"the default training run failed: {result.stderr[-300:]}")
    client = mlflow.MlflowClient(uri, uri)
    (run,) = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    metrics = run.data.metrics
    return [
        Figure("training", "default full run: test accuracy", metrics["test_accuracy"], "fraction"),
        Figure(
            "training",
            "default full run: training script wall time",
            metrics["run_seconds"],
            "s",
            {
                "process_wall_s": round(wall, 1),
                "tracking_overhead_fraction": metrics["tracking_overhead_fraction"],
            },
        ),
    ]


def measure(mode: Mode) -> list[Figure]:
    mnist_test(1)  # fail early, with torchvision's message, when MNIST is missing
    return tracking_overhead(mode) + full_run(mode)
