"""Reading real handwriting: each evaluation set through a real ``mlflow models serve``, beside the
same network behind a textbook preprocessing (``tests/textbook.py``), in the same run.

Figures: accuracy and refusals per set (the report seed, as the test and the model card use), the
baseline's accuracy, and how fast the served pipeline reads each set's images.
"""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np
import torch

from bench import processes
from bench.core import Figure, Mode, ModelUnderTest, mnist_test
from mnist_mlops.registry.evalsets.scoring import MNIST_PNG
from mnist_mlops.registry.evalsets.sets import NO_DIGIT, REPORT_SEED, SETS, Sources, build
from mnist_mlops.serve.model.transforms import normalize
from mnist_mlops.train.data import resolve_data_dir
from mnist_mlops.train.export import example_png
from tests.fullmodel import full_network
from tests.textbook import textbook

CHUNK = 64


def _served(url: str, images: list[bytes]) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, refused, images/s) from the endpoint."""
    labels, refused = [], []
    started = time.perf_counter()
    with httpx.Client(timeout=300) as client:
        for start in range(0, len(images), CHUNK):
            rows = [[base64.b64encode(data).decode()] for data in images[start : start + CHUNK]]
            body = {"dataframe_split": {"columns": ["image"], "data": rows}, "params": {"on_error": "row"}}
            for answer in client.post(f"{url}/invocations", json=body).json()["predictions"]:
                refused.append(answer.get("error") is not None)
                labels.append(NO_DIGIT if refused[-1] else answer["label"])
    return np.array(labels), np.array(refused), len(images) / (time.perf_counter() - started)


def _baseline(images: list[bytes]) -> np.ndarray:
    network = full_network()
    with torch.inference_mode():
        fields = torch.from_numpy(np.stack([textbook(data) for data in images])).unsqueeze(1)
        return network(normalize(fields)).argmax(1).numpy()


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    mnist_test()  # a missing MNIST stops the harness with its one line here
    sources = Sources.load(resolve_data_dir(None))
    count = mode.count(300, 40)
    sets = {MNIST_PNG: ([example_png(i) for i in sources.mnist_images[: mode.count(10_000, 500)]], None)}
    for name in SETS:
        samples = build(name, sources, REPORT_SEED, count)
        sets[name] = ([s.data for s in samples], np.array([s.label for s in samples]))
    figures = []
    server = processes.mlflow_serve(model.model_uri, model.tracking_uri, model.directory)
    with processes.running(server, "/ping"):
        for name, (images, labels) in sets.items():
            if labels is None:
                labels = sources.mnist_labels[: len(images)]
            predicted, refused, rate = _served(server.url, images)
            detail = {
                "images": len(images),
                "refused": round(float(refused.mean()), 4),
                "images_per_second": round(rate, 1),
            }
            if name == "nodigit":
                figures.append(Figure("quality", f"{name}: refused", float(refused.mean()), "share", detail))
                continue
            figures.append(
                Figure(
                    "quality", f"{name}: served pipeline accuracy", float((predicted == labels).mean()), "share", detail
                )
            )
            figures.append(
                Figure(
                    "quality",
                    f"{name}: textbook baseline accuracy",
                    float((_baseline(images) == labels).mean()),
                    "share",
                )
            )
            figures.append(Figure("quality", f"{name}: refused (false refusals)", float(refused.mean()), "share"))
    return figures
