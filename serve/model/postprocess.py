"""Network logits -> the answer per row: ``label``, ``confidence``, ``probabilities``, ``uncertain``.

The probabilities are calibrated: the logits are divided by the temperature fitted on the
validation split at the end of training (``calibrate``), so a confidence of 0.9 is right about nine
times in ten. ``uncertain`` is true when the confidence is below the request's threshold: a client
can ask a person instead of trusting a guess. Rows that could not be scored carry ``error`` (and
null figures) when the caller asked for per-row errors; see ``pyfunc``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def probabilities_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    """Softmax of ``logits / temperature`` in float64, so each row sums to 1 within 1e-12 after
    JSON round-tripping."""
    return torch.softmax(logits.double() / temperature, dim=1).numpy()


def answers(
    probabilities: np.ndarray,
    errors: list[str | None] | None = None,
    uncertain_below: float = 0.0,
    inputs: list[np.ndarray] | None = None,
) -> pd.DataFrame:
    """One output row per input row.

    ``probabilities`` (and ``inputs``, the 28x28 images the network saw, when given) hold the
    scored rows in input order, skipping rows whose ``errors`` entry is set. Without errors the
    frame has ``label`` (int64), ``confidence`` (float64), ``probabilities`` (lists of 10 floats)
    and ``uncertain`` (bool); with ``errors`` it also has ``error`` (None when scored) and the
    figures of failed rows are None; with ``inputs``, an ``input`` column of 784 floats in [0, 1].
    """
    labels = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=np.int64)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    uncertain = confidence < uncertain_below
    flat = [image.ravel().round(4).tolist() for image in inputs] if inputs is not None else None
    if errors is None:
        columns = {
            "label": labels.astype(np.int64),
            "confidence": confidence.astype(np.float64),
            "probabilities": list(probabilities.tolist()),
            "uncertain": uncertain.astype(bool),
        }
        return pd.DataFrame(columns | ({"input": flat} if flat is not None else {}))
    scored = iter(
        zip(
            labels.tolist(),
            confidence.tolist(),
            probabilities.tolist(),
            uncertain.tolist(),
            flat if flat is not None else [None] * len(labels),
            strict=True,
        )
    )
    rows = [(None,) * 5 if error else next(scored) for error in errors]
    # object columns keep ints as ints and None as null (a float column would turn labels into 3.0
    # and nulls into NaN in JSON and Parquet)
    columns = {
        name: pd.Series([row[i] for row in rows], dtype=object)
        for i, name in enumerate(("label", "confidence", "probabilities", "uncertain"))
    }
    columns["error"] = pd.Series(errors, dtype=object)
    if flat is not None:
        columns["input"] = pd.Series([row[4] for row in rows], dtype=object)
    return pd.DataFrame(columns)
