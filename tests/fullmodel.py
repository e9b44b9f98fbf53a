"""The model from the full default training, for quality and end-to-end tests.

Training it takes about nine minutes, so its weights are kept in ``tests/assets/full-model``
(``provenance.json`` there records the run that produced them: command, parameters, test
accuracy, commit). Tests rebuild the real pyfunc from them through ``serve.model.export``, the
same code the training run uses.
"""

from __future__ import annotations

import json

import torch

from mnist_mlops.serve.model.network import build_network
from tests.helpers import PROJECT_ROOT

ASSET = PROJECT_ROOT / "tests" / "assets" / "full-model"


def full_network() -> torch.nn.Module:
    network = build_network(json.loads((ASSET / "architecture.json").read_text()))
    network.load_state_dict(torch.load(ASSET / "weights.pt", map_location="cpu", weights_only=True))
    return network.eval()


def full_temperature() -> float:
    """The calibration temperature the full run fitted (1.0 for weights saved without one)."""
    return float(json.loads((ASSET / "architecture.json").read_text()).get("temperature", 1.0))
