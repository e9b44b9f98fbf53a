"""A model's figures on the evaluation sets: accuracy, refusals and calibration error per set.

What the model card of a training run reports, and what ``mnist-registry evaluate --sets`` sets
side by side for two versions. Scored through the model's own pyfunc (``predict`` with per-row
errors), exactly as a client is answered: a refused image counts as wrong on a set that holds
digits, and as right on ``nodigit``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mnist_mlops.registry.evalsets.sets import NO_DIGIT, SETS, Sources, build

MNIST_PNG = "mnist-png"  # the MNIST test set as PNG files, beside the evaluation sets
ECE_BINS = 15


@dataclass(frozen=True)
class SetScore:
    name: str
    count: int
    accuracy: float  # right answers (on nodigit: refusals) over all images
    refused: float  # share of images refused as "no digit found"
    ece: float | None  # expected calibration error of the answered images (None on nodigit)
    uncertain: float | None  # share of answered images marked uncertain

    def to_dict(self) -> dict:
        return asdict(self)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """The gap between confidence and accuracy, averaged over equal-width confidence bins and
    weighted by how many answers fall in each (0 for no answers)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.size == 0:
        return 0.0
    which = np.clip(np.digitize(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in np.unique(which):
        members = which == b
        error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(error)


def score(model, name: str, images: list[bytes], labels: np.ndarray, chunk: int = 256) -> SetScore:
    """``model``'s figures on one set of encoded images with their labels (``NO_DIGIT`` for none)."""
    answers = pd.concat(
        [
            model.predict(pd.DataFrame({"image": images[start : start + chunk]}), params={"on_error": "row"})
            for start in range(0, len(images), chunk)
        ],
        ignore_index=True,
    )
    refused = answers["error"].notna().to_numpy()
    answered = ~refused
    predicted = np.array([-1 if r else int(label) for label, r in zip(answers["label"], refused, strict=True)])
    if (labels == NO_DIGIT).all():
        return SetScore(name, len(labels), float(refused.mean()), float(refused.mean()), None, None)
    confidence = answers.loc[answered, "confidence"].to_numpy(dtype=np.float64)
    correct = predicted[answered] == labels[answered]
    uncertain = answers.loc[answered, "uncertain"] if "uncertain" in answers else None
    return SetScore(
        name,
        len(labels),
        float((predicted == labels).mean()),
        float(refused.mean()),
        expected_calibration_error(confidence, correct),
        float(uncertain.astype(bool).mean()) if uncertain is not None and len(uncertain) else None,
    )


def score_all(model, sources: Sources, seed: int, count: int, mnist_png: list[bytes] | None = None) -> list[SetScore]:
    """``model`` on every evaluation set (``count`` images each, from ``seed``), and on the MNIST
    test set as PNG files when ``mnist_png`` holds them."""
    scores = []
    if mnist_png is not None:
        scores.append(score(model, MNIST_PNG, mnist_png, sources.mnist_labels[: len(mnist_png)]))
    for name in SETS:
        samples = build(name, sources, seed, count)
        scores.append(score(model, name, [s.data for s in samples], np.array([s.label for s in samples])))
    return scores


def table(scores: list[SetScore], title: str = "") -> str:
    """A Markdown table of ``scores``."""
    lines = [title, ""] if title else []
    lines += [
        "| set | images | accuracy | refused | calibration error (ECE) | uncertain |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in scores:
        accuracy = f"{s.accuracy:.2%}" + (" (refused)" if s.ece is None else "")
        ece = "" if s.ece is None else f"{s.ece:.3f}"
        uncertain = "" if s.uncertain is None else f"{s.uncertain:.1%}"
        lines.append(f"| {s.name} | {s.count} | {accuracy} | {s.refused:.1%} | {ece} | {uncertain} |")
    return "\n".join(lines)
