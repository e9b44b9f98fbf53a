"""Network logits -> the answer per row: ``label``, ``confidence`` and ``probabilities``.

Rows that could not be scored carry ``error`` (and null figures) when the caller asked for
per-row errors; see ``serve.model.pyfunc``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

OUTPUT_COLUMNS = ("label", "confidence", "probabilities")


def probabilities_from_logits(logits: torch.Tensor) -> np.ndarray:
    """Softmax in float64, so each row sums to 1 within 1e-12 after JSON round-tripping."""
    return torch.softmax(logits.double(), dim=1).numpy()


def answers(probabilities: np.ndarray, errors: list[str | None] | None = None) -> pd.DataFrame:
    """One output row per input row.

    ``probabilities`` holds the scored rows in input order, skipping rows whose ``errors`` entry is
    set. Without errors the frame has ``label`` (int64), ``confidence`` (float64) and
    ``probabilities`` (lists of 10 floats); with ``errors`` it also has ``error`` (None when scored)
    and the figures of failed rows are None.
    """
    labels = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=np.int64)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    if errors is None:
        return pd.DataFrame(
            {
                "label": labels.astype(np.int64),
                "confidence": confidence.astype(np.float64),
                "probabilities": list(probabilities.tolist()),
            }
        )
    scored = iter(zip(labels.tolist(), confidence.tolist(), probabilities.tolist(), strict=True))
    rows = [(None, None, None) if error else next(scored) for error in errors]
    return pd.DataFrame(
        {
            # object columns keep ints as ints and None as null (a float column would turn
            # labels into 3.0 and nulls into NaN in JSON and Parquet)
            "label": pd.Series([r[0] for r in rows], dtype=object),
            "confidence": pd.Series([r[1] for r in rows], dtype=object),
            "probabilities": pd.Series([r[2] for r in rows], dtype=object),
            "error": pd.Series(errors, dtype=object),
        }
    )
