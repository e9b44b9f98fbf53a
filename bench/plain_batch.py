"""The script a user would write instead of ``mnist-batch``: the same registered model loaded with
``mlflow.pyfunc.load_model``, ``predict`` on the folder's files in chunks, the labels written to
Parquet. The batch section times it as a whole command beside ``mnist-batch`` on the same files.

``python -m bench.plain_batch --model URI --input FOLDER --output FILE``; prints the row count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
import pandas as pd

CHUNK = 512  # rows a predict call: the model's decode bound allows it, and larger buys nothing here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    model = mlflow.pyfunc.load_model(args.model)
    files = sorted(args.input.glob("*.png"))
    parts = []
    for start in range(0, len(files), CHUNK):
        chunk = files[start : start + CHUNK]
        answer = model.predict(pd.DataFrame({"image": [path.read_bytes() for path in chunk]}))
        parts.append(pd.DataFrame({"id": [path.name for path in chunk], "label": answer["label"]}))
    pd.concat(parts, ignore_index=True).to_parquet(args.output)
    print(sum(len(part) for part in parts))


if __name__ == "__main__":
    main()
