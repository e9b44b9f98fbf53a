"""The whole pyfunc in-process (decode, preprocess, network, postprocess) against the bare network."""

from __future__ import annotations

import mlflow
import pandas as pd

from bench.core import Figure, Mode, ModelUnderTest, mnist_test, png, throughput

BATCH = 64


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    pyfunc = mlflow.pyfunc.load_model(str(model.local_path))
    images, _ = mnist_test(BATCH * 4)
    frames = {
        "pixels": [
            pd.DataFrame({"pixels": list(images[i : i + BATCH].reshape(BATCH, -1))})
            for i in range(0, len(images), BATCH)
        ],
        "png": [pd.DataFrame({"image": [png(x) for x in images[i : i + BATCH]]}) for i in range(0, len(images), BATCH)],
        "png, one per call": [pd.DataFrame({"image": [png(images[i])]}) for i in range(BATCH)],
    }
    figures = []
    for name, batches in frames.items():
        cursor = iter(range(10**9))

        def step(batches=batches, cursor=cursor) -> int:
            frame = batches[next(cursor) % len(batches)]
            pyfunc.predict(frame)
            return len(frame)

        rate, _ = throughput(step, mode.seconds(4.0, 0.5))
        figures.append(
            Figure("pyfunc", f"pyfunc in-process, {name}", rate, "images/s", {"rows_per_call": len(batches[0])})
        )
    return figures
