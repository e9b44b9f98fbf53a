"""The pieces every measurement shares: figures, timing loops, the model under test, workloads."""

from __future__ import annotations

import base64
import io
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tests.fullmodel import full_network, full_temperature


class BenchError(Exception):
    """A measurement could not be taken (a server did not come up, a load run had errors)."""


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def ratio(name: str, numerator: Figure | None, denominator: Figure | None, unit: str = "x") -> Figure | None:
    """``numerator / denominator`` as a figure of the ratios section; None if either is missing."""
    if numerator is None or denominator is None or not denominator.value:
        return None
    return Figure(
        "ratios",
        name,
        numerator.value / denominator.value,
        unit,
        {"numerator": numerator.name, "denominator": denominator.name},
    )


@dataclass(frozen=True)
class Mode:
    quick: bool

    def seconds(self, full: float, quick: float = 2.0) -> float:
        return quick if self.quick else full

    def count(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def throughput(step: Callable[[], int], seconds: float, warmup: int = 2) -> tuple[float, int]:
    """(items per second, calls) of ``step`` (which returns the items it did), for ``seconds``."""
    for _ in range(warmup):
        step()
    done, calls, started = 0, 0, time.perf_counter()
    while True:
        done += step()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed, calls


def mnist_test(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import MNIST

    from mnist_mlops.train.data import raw_dir, resolve_data_dir

    root = resolve_data_dir(None)
    try:
        test = MNIST(str(root), train=False)
    except RuntimeError:  # torchvision's "Dataset not found"; the benchmark never downloads
        raise BenchError(
            f"the MNIST test set is not under {raw_dir(root)}: set MNIST_DATA_DIR to a folder holding MNIST/raw/*-ubyte"
        ) from None
    images, labels = test.data.numpy(), test.targets.numpy()
    return (images[:limit], labels[:limit]) if limit else (images, labels)


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def request_body(images: np.ndarray) -> bytes:
    """A ``dataframe_split`` request of base64 PNGs, as a client sends images."""
    rows = [[base64.b64encode(png(image)).decode()] for image in images]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


def answer_rows(payload: object) -> list[dict]:
    """The rows of an answer: MLflow's ``{"predictions": [...]}``, or a bare list (BentoML's)."""
    return payload["predictions"] if isinstance(payload, dict) else payload


@dataclass
class ModelUnderTest:
    """The full default model, logged and registered in a store of the benchmark's own: version 1
    is the champion, version 2 (the same model again) the challenger, for an A/B split whose two
    backends answer alike."""

    directory: Path
    tracking_uri: str
    model_uri: str  # models:/mnist-cnn/1
    local_path: Path  # the pyfunc in a local folder (same model)


def prepare_model() -> ModelUnderTest:
    import mlflow
    from mlflow import MlflowClient

    from mnist_mlops.train.export import log_model, save_model

    directory = Path(tempfile.mkdtemp(prefix="mnist-bench-"))
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    example = mnist_test(1)[0][0]
    network, temperature = full_network(), full_temperature()
    # Artifacts beside the store: a new experiment's default, ./mlruns, is the caller's folder.
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", (directory / "artifacts").as_uri()))
    with mlflow.start_run() as run:
        info = log_model(network, example, temperature)
    client = MlflowClient(uri, uri)
    client.create_registered_model("mnist-cnn")
    client.create_model_version("mnist-cnn", info.model_uri, run.info.run_id)
    client.set_registered_model_alias("mnist-cnn", "champion", "1")
    client.create_model_version("mnist-cnn", info.model_uri, run.info.run_id)
    client.set_registered_model_alias("mnist-cnn", "challenger", "2")
    local = directory / "model"
    save_model(network, example, local, temperature)
    return ModelUnderTest(directory, uri, "models:/mnist-cnn/1", local)
