"""The model from the full default training, for quality tests.

Training it takes about ten minutes, so its weights are kept in ``tests/assets/full-model``
(see the README there for the run that produced them). The fixture saves them as the real pyfunc,
through the same ``serve.model.export`` the training run uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from serve.model.export import save_model
from tests.helpers import PROJECT_ROOT
from train.network import build_network

ASSET = PROJECT_ROOT / "tests" / "assets" / "full-model"


def full_network() -> torch.nn.Module:
    network = build_network(json.loads((ASSET / "architecture.json").read_text()))
    network.load_state_dict(torch.load(ASSET / "weights.pt", map_location="cpu", weights_only=True))
    return network.eval()


@pytest.fixture(scope="session")
def mnist_test(mnist_root) -> tuple[np.ndarray, np.ndarray]:
    test = MNIST(str(mnist_root), train=False)
    return test.data.numpy(), test.targets.numpy()


@pytest.fixture(scope="session")
def full_model_path(tmp_path_factory, mnist_test) -> Path:
    path = tmp_path_factory.mktemp("full-model") / "model"
    save_model(full_network(), mnist_test[0][0], path)
    return path


@pytest.fixture(scope="session")
def full_model(full_model_path):
    return mlflow.pyfunc.load_model(str(full_model_path))
