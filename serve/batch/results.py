"""Batch output rows: one per input, in one schema for every engine and writer."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa

from serve.batch.scoring_model import ScoringModel

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("label", pa.int64()),
        ("confidence", pa.float64()),
        ("probabilities", pa.list_(pa.float64())),
        ("error", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
    ]
)
COLUMNS = tuple(SCHEMA.names)


def score_chunk(model, chunk: pd.DataFrame, scoring: ScoringModel) -> pa.Table:
    """Score the readable rows of a source chunk with ``model``; every input row gets a result row."""
    readable = chunk["read_error"].isna().to_numpy()
    labels, confidence, probabilities = [None] * len(chunk), [None] * len(chunk), [None] * len(chunk)
    errors = list(chunk["read_error"])
    if readable.any():
        inputs = chunk.loc[readable, ["image", "pixels"]].reset_index(drop=True)
        answer = model.predict(inputs, params={"on_error": "row"})
        positions = readable.nonzero()[0]
        error_column = answer["error"] if "error" in answer.columns else [None] * len(answer)
        for position, label, conf, probs, error in zip(
            positions,
            answer["label"],
            answer["confidence"],
            answer["probabilities"],
            error_column,
            strict=True,
        ):
            labels[position] = None if label is None else int(label)
            confidence[position] = None if conf is None else float(conf)
            probabilities[position] = None if probs is None else list(probs)
            errors[position] = error
    now = datetime.now(UTC)
    n = len(chunk)
    return pa.table(
        {
            "id": list(chunk["id"]),
            "label": labels,
            "confidence": confidence,
            "probabilities": probabilities,
            "error": errors,
            "model_name": [scoring.name] * n,
            "model_version": [scoring.version] * n,
            "run_id": [scoring.run_id] * n,
            "scored_at": [now] * n,
        },
        schema=SCHEMA,
    )
