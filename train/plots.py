"""Pictures a person would rather look at than read: learning curves, confusion matrix, mistakes.

Built on ``matplotlib.figure.Figure`` directly (no pyplot), so no global backend or state is
touched and the figures render headless.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from mnist_mlops.train.loop import EpochResult


def learning_curves(history: list[EpochResult]) -> Figure:
    epochs = [r.epoch for r in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [r.train_loss for r in history], marker="o", label="train (augmented)")
    loss_axes.plot(epochs, [r.val_loss for r in history], marker="o", label="validation")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", title="Loss", yscale="log")
    loss_axes.legend()
    accuracy_axes.plot(epochs, [100 * r.val_accuracy for r in history], marker="o", color="C1")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy (%)", title="Validation accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
    return figure


def confusion_matrix_figure(matrix: np.ndarray) -> Figure:
    """``matrix[true, predicted]`` counts as a heat map with the counts written in."""
    figure = Figure(figsize=(7, 6), layout="constrained")
    axes = figure.subplots()
    # Log colour scale: the diagonal (about 1,000 per class) would otherwise hide the mistakes.
    shown = axes.imshow(np.log1p(matrix), cmap="Blues")
    figure.colorbar(shown, ax=axes, label="log(1 + count)")
    threshold = np.log1p(matrix).max() / 2
    for true in range(matrix.shape[0]):
        for predicted in range(matrix.shape[1]):
            count = int(matrix[true, predicted])
            if count:
                colour = "white" if np.log1p(count) > threshold else "black"
                axes.text(predicted, true, str(count), ha="center", va="center", fontsize=8, color=colour)
    axes.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test set)")
    axes.set_xticks(range(10))
    axes.set_yticks(range(10))
    return figure


def misclassified_grid(
    images: np.ndarray, true: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, limit: int = 36
) -> Figure:
    """The most confidently wrong test digits, titled ``true -> predicted (confidence)``."""
    wrong = np.flatnonzero(true != predicted)
    worst = wrong[np.argsort(-confidence[wrong])][:limit]
    columns = 6
    rows = max(1, -(-len(worst) // columns))
    figure = Figure(figsize=(columns * 1.6, rows * 1.8), layout="constrained")
    figure.suptitle(f"Most confident mistakes ({len(wrong)} of {len(true)} test digits wrong)")
    axes_grid = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axes in axes_grid:
        axes.axis("off")
    for axes, index in zip(axes_grid, worst, strict=False):
        axes.imshow(images[index], cmap="gray")
        axes.set_title(f"{true[index]} -> {predicted[index]} ({confidence[index]:.2f})", fontsize=9)
    return figure
