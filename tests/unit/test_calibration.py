"""Temperature scaling and the expected calibration error, on synthetic logits with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_mlops.registry.evalsets.scoring import expected_calibration_error
from mnist_mlops.train.calibration import fit_temperature


def over_confident(n: int = 20_000, temperature: float = 2.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose labels are drawn from softmax(logits / temperature): calibrated only at that T."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=generator) * 4
    labels = torch.multinomial(torch.softmax(logits / temperature, 1), 1, generator=generator).squeeze(1)
    return logits, labels


def test_the_fitted_temperature_recovers_the_one_the_labels_were_drawn_with():
    logits, labels = over_confident(temperature=2.5)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_scaling_by_the_fitted_temperature_lowers_the_calibration_error():
    logits, labels = over_confident()
    before = torch.softmax(logits, 1)
    after = torch.softmax(logits / fit_temperature(logits, labels), 1)
    errors = []
    for probabilities in (before, after):
        confidence, predicted = probabilities.max(1)
        errors.append(expected_calibration_error(confidence.numpy(), (predicted == labels).numpy()))
    assert errors[1] < errors[0] / 3 and errors[1] < 0.02


@pytest.mark.parametrize(
    ("confidence", "correct", "expected"),
    [
        ([0.9] * 10, [1] * 9 + [0], 0.0),  # 90% sure, right 9 times in 10
        ([1.0] * 4, [0] * 4, 1.0),  # sure and always wrong
        ([0.6, 0.6, 0.95, 0.95], [1, 1, 1, 1], 0.5 * 0.4 + 0.5 * 0.05),
        ([], [], 0.0),
    ],
)
def test_expected_calibration_error_by_hand(confidence, correct, expected):
    assert expected_calibration_error(np.array(confidence), np.array(correct)) == pytest.approx(expected)
