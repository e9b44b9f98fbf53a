"""Final figures on the held-out test set: accuracy, per-class precision and recall, confusions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mnist_mlops.registry.evalsets.scoring import expected_calibration_error
from mnist_mlops.serve.model.network import NUM_CLASSES, DigitNet
from mnist_mlops.train.calibration import fit_temperature
from mnist_mlops.train.data import Split
from mnist_mlops.train.loop import evaluate


@dataclass(frozen=True)
class TestReport:
    loss: float
    accuracy: float
    confusion: np.ndarray  # [true, predicted] counts
    predicted: np.ndarray
    confidence: np.ndarray
    temperature: float = 1.0
    ece: float = 0.0  # expected calibration error of the calibrated confidence

    @property
    def precision(self) -> np.ndarray:
        return np.diag(self.confusion) / np.maximum(self.confusion.sum(axis=0), 1)

    @property
    def recall(self) -> np.ndarray:
        return np.diag(self.confusion) / np.maximum(self.confusion.sum(axis=1), 1)

    def metrics(self) -> dict[str, float]:
        figures = {
            "test_accuracy": self.accuracy,
            "test_loss": self.loss,
            "temperature": self.temperature,
            "test_ece": self.ece,
        }
        for digit in range(NUM_CLASSES):
            figures[f"test_precision_{digit}"] = float(self.precision[digit])
            figures[f"test_recall_{digit}"] = float(self.recall[digit])
        return figures


def calibrate(model: DigitNet, val: Split, device: torch.device) -> float:
    """The temperature that makes ``model``'s confidence truthful, fitted on the validation split."""
    _, _, logits = evaluate(model, val, device)
    return fit_temperature(logits, val.labels)


def test_report(model: DigitNet, test: Split, device: torch.device, temperature: float = 1.0) -> TestReport:
    """Figures on the test set, with the probabilities calibrated by ``temperature``."""
    loss, accuracy, logits = evaluate(model, test, device)
    probabilities = torch.softmax(logits / temperature, dim=1)
    confidence, predicted = probabilities.max(dim=1)
    true = test.labels.numpy()
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (true, predicted.numpy()), 1)
    ece = expected_calibration_error(confidence.numpy(), predicted.numpy() == true)
    return TestReport(loss, accuracy, confusion, predicted.numpy(), confidence.numpy(), temperature, ece)
