"""What a training run logs to MLflow, and how long logging takes.

Logged: every parameter; per epoch the train loss, validation loss and accuracy, learning rate and
throughput (one call per epoch, never per step); at the end the test accuracy and per-class
precision/recall, three pictures (learning curves, confusion matrix, worst mistakes), the dataset
as a run input with its fingerprint, the git commit, and the served model. Every MLflow call goes
through ``RunLogger.timed`` so the run records its own tracking overhead
(``tracking_overhead_fraction``), which is kept under 3% of the wall time.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np

from mnist_mlops.common.dataset_link import link_dataset
from mnist_mlops.train import plots
from mnist_mlops.train.config import TrainConfig
from mnist_mlops.train.data import MnistData, raw_dir
from mnist_mlops.train.evaluation import TestReport
from mnist_mlops.train.loop import EpochResult

TAG_DATASET = "dataset_fingerprint"
TAG_DATASET_VERIFIED = "dataset_verified"
TAG_GIT_COMMIT = "git_commit"
TAG_CONFIG = "train_config"


def git_commit(directory: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunLogger:
    """Logs to the active run; ``seconds`` accumulates the wall time spent in MLflow calls."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.history: list[EpochResult] = []

    @contextmanager
    def timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started

    def start(self, config: TrainConfig, data: MnistData, device: str, project_dir: Path) -> None:
        tags = {
            # What the script actually parsed: proves every MLproject parameter reached it.
            TAG_CONFIG: json.dumps(asdict(config), sort_keys=True),
            TAG_DATASET: data.fingerprint,
            TAG_DATASET_VERIFIED: str(data.verified).lower(),
            "device": device,
        }
        commit = git_commit(project_dir)
        if commit:
            tags[TAG_GIT_COMMIT] = commit
        with self.timed():
            # Under `mlflow run`, MLflow has already logged the MLproject parameters exactly as
            # given (MLflow refuses to change a logged value), so only the missing ones are added.
            run = mlflow.active_run()
            logged = mlflow.get_run(run.info.run_id).data.params if run else {}
            params = {k: v for k, v in config.as_params().items() if k not in logged}
            params |= {
                "data_dir_resolved": str(data.root.resolve()),
                "train_samples": len(data.train),
                "val_samples_used": len(data.val),
                "test_samples": len(data.test),
            }
            mlflow.log_params(params)
            mlflow.set_tags(tags)
            self._log_dataset(data)

    def _log_dataset(self, data: MnistData) -> None:
        from mlflow.data.http_dataset_source import HTTPDatasetSource
        from mlflow.data.meta_dataset import MetaDataset

        # The dataset is recorded by reference and fingerprint: the raw files are public.
        source = HTTPDatasetSource(f"file://{raw_dir(data.root).resolve()}")
        for context, split in (("training", data.train), ("validation", data.val), ("test", data.test)):
            dataset = MetaDataset(source=source, name=f"mnist-{context}", digest=data.fingerprint[:16])
            link_dataset(dataset, context=f"{context} ({len(split)} images)")

    def epoch(self, result: EpochResult) -> None:
        self.history.append(result)
        with self.timed():
            mlflow.log_metrics(
                {
                    "train_loss": result.train_loss,
                    "val_loss": result.val_loss,
                    "val_accuracy": result.val_accuracy,
                    "lr": result.lr,
                    "epoch_seconds": result.seconds,
                    "train_images_per_second": result.images_per_second,
                },
                step=result.epoch,
            )

    def finish(self, report: TestReport, test_images: np.ndarray, test_labels: np.ndarray) -> None:
        with self.timed():
            mlflow.log_metrics(report.metrics())
            mlflow.log_figure(plots.learning_curves(self.history), "plots/learning_curves.png")
            mlflow.log_figure(plots.confusion_matrix_figure(report.confusion), "plots/confusion_matrix.png")
            mlflow.log_figure(
                plots.misclassified_grid(test_images, test_labels, report.predicted, report.confidence),
                "plots/misclassified.png",
            )

    def log_overhead(self, wall_seconds: float) -> None:
        mlflow.log_metrics(
            {
                "tracking_seconds": self.seconds,
                "run_seconds": wall_seconds,
                "tracking_overhead_fraction": self.seconds / max(wall_seconds, 1e-9),
            }
        )
