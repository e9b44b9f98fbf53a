"""The whole pyfunc in-process (decode, preprocess, network, postprocess) against the bare network."""

from __future__ import annotations

import mlflow
import pandas as pd

from bench.core import Figure, Mode, ModelUnderTest, mnist_test, png, ratio, throughput

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


def measure_fast_paths(mode: Mode) -> list[Figure]:
    """What the model package's two fast paths buy, each against the general path it short-cuts,
    on the same 64 MNIST test digits as PNG files: decoding (Pillow's ``Image.open`` for every file,
    against the short way for small plain greyscale PNGs, decoded together) and preprocessing
    (``to_mnist`` one image at a time, against the vectorised stack)."""
    import numpy as np

    from mnist_mlops.serve.model.decode import as_unit, decode_levels_many, decode_with_pillow
    from mnist_mlops.serve.model.preprocess import to_mnist
    from mnist_mlops.serve.model.preprocess_batch import to_mnist_batch

    images, _ = mnist_test(BATCH)
    files = [png(image) for image in images]
    levels = np.stack(decode_levels_many(files))
    ways = {
        "decoding 64 PNGs: Image.open each": lambda: [decode_with_pillow(f) for f in files],
        "decoding 64 PNGs: the PNG fast path": lambda: decode_levels_many(files),
        "preprocessing 64 digits: one by one": lambda: [to_mnist(as_unit(x)) for x in levels],
        "preprocessing 64 digits: vectorised": lambda: to_mnist_batch(levels),
    }
    rates = {}
    for name, work in ways.items():

        def step(work=work) -> int:
            work()
            return BATCH

        rates[name], _ = throughput(step, mode.seconds(3.0, 0.5))
    figures = [Figure("pyfunc", name, rate, "images/s") for name, rate in rates.items()]
    general_decode, fast_decode, general_prepare, fast_prepare = figures
    decoding = ratio("PNG fast path / Image.open, decoding", fast_decode, general_decode)
    preprocessing = ratio("vectorised / one by one, preprocessing", fast_prepare, general_prepare)
    return [f for f in (*figures, decoding, preprocessing) if f is not None]
