"""Batch output rows: one per input, in one schema for every engine and writer."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mnist_mlops.serve.batch.scoring_model import ScoringModel

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("label", pa.int64()),
        ("confidence", pa.float64()),
        ("probabilities", pa.list_(pa.float64())),
        ("uncertain", pa.bool_()),
        ("error", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
    ]
)
COLUMNS = tuple(SCHEMA.names)
# What the model answers per row (a model logged before ``uncertain`` existed leaves it null).
ANSWER_COLUMNS = ("label", "confidence", "probabilities", "uncertain", "error")


def score_chunk(model, chunk: pd.DataFrame, scoring: ScoringModel) -> pa.Table:
    """Score the readable rows of a source chunk with ``model``; every input row gets a result row.

    Built column by column in Arrow (rows the model did not see, or could not score, are nulls),
    not row by row in Python: on small images that loop cost a tenth of the scoring time.
    """
    n = len(chunk)
    read_errors = pa.array(chunk["read_error"], type=pa.string())
    readable = read_errors.is_null().to_numpy(zero_copy_only=False)
    answered = {name: pa.nulls(n, SCHEMA.field(name).type) for name in ANSWER_COLUMNS}
    if readable.any():
        inputs = chunk.loc[readable, ["image", "pixels"]].reset_index(drop=True)
        answer = model.predict(inputs, params={"on_error": "row"})
        slots = np.full(n, -1, dtype=np.int64)
        slots[readable] = np.arange(len(inputs))
        rows = pa.array(slots, mask=slots < 0)  # input row -> its answer row, or null
        for name in ANSWER_COLUMNS:
            if name in answer.columns:
                values = pa.array(answer[name], type=SCHEMA.field(name).type, from_pandas=True)
                answered[name] = values.take(rows)
    now = pa.scalar(datetime.now(UTC), SCHEMA.field("scored_at").type)
    return pa.table(
        {
            "id": pa.array(chunk["id"], type=pa.string()),
            **{name: answered[name] for name in ANSWER_COLUMNS if name != "error"},
            "error": pc.coalesce(read_errors, answered["error"]),
            "model_name": pa.repeat(pa.scalar(scoring.name, pa.string()), n),
            "model_version": pa.repeat(pa.scalar(scoring.version, pa.string()), n),
            "run_id": pa.repeat(pa.scalar(scoring.run_id, pa.string()), n),
            "scored_at": pa.repeat(now, n),
        },
        schema=SCHEMA,
    )
