"""The served network in bfloat16 against float32 (``MNIST_TORCH_DTYPE``), in the same run.

Two places, each in alternating rounds (medians): the pyfunc in-process on 64 PNGs a call, and
the gateway with one warm backend under the online loads that the network's speed moves (one
image a request at concurrency 32; 64 a request at concurrency 8). Every round checks that both
number types give the same labels to the 64 digits. Whether this CPU computes in bfloat16
natively (AMX, AVX-512 BF16, as oneDNN reports it) is in each figure's detail: without it,
bfloat16 is emulated and slower, which is why the default stays float32 and ``auto`` exists.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Iterator

import pandas as pd

from bench import processes
from bench.core import BenchError, Figure, Mode, ModelUnderTest, mnist_test, png, ratio, request_body, throughput
from bench.load import run_wrk, run_wrk_answered
from bench.online import OPTIMISED_ARGS
from mnist_mlops.serve.model import DTYPE_ENV

TYPES = ("float32", "bfloat16")
C32, IMAGES_64 = "1 image/request, concurrency 32", "64 images/request, concurrency 8"
IN_PROCESS, GATEWAY = "pyfunc in-process, 64 PNGs a call", "gateway, 1 warm backend"


def native_bfloat16() -> bool:
    """Whether ``auto`` picks bfloat16 on this CPU (the model's own test)."""
    import torch

    from mnist_mlops.serve.model.network import inference_dtype

    return inference_dtype("auto", torch.device("cpu")) is torch.bfloat16


@contextlib.contextmanager
def number_type(name: str) -> Iterator[None]:
    """``DTYPE_ENV`` set to ``name`` for a pyfunc loaded meanwhile (the model reads it when it loads)."""
    before = os.environ.get(DTYPE_ENV)
    os.environ[DTYPE_ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DTYPE_ENV, None)
        else:
            os.environ[DTYPE_ENV] = before


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    detail = {"native_bfloat16": native_bfloat16(), "rounds": mode.count(3, 1)}
    figures = in_process(mode, model, detail) + through_gateway(mode, model, detail)
    by_name = {f.name: f for f in figures}
    ratios = [
        ratio(f"bfloat16 / float32, {what}", by_name[f"{what}, bfloat16"], by_name[f"{what}, float32"])
        for what in (IN_PROCESS, f"{GATEWAY}, {C32}", f"{GATEWAY}, {IMAGES_64}")
    ]
    return figures + [r for r in ratios if r is not None]


def in_process(mode: Mode, model: ModelUnderTest, detail: dict) -> list[Figure]:
    import mlflow

    images, _ = mnist_test(64)
    frame = pd.DataFrame({"image": [png(image) for image in images]})
    models = {}
    for name in TYPES:
        with number_type(name):
            models[name] = mlflow.pyfunc.load_model(str(model.local_path))
    labels = {name: pyfunc.predict(frame)["label"].tolist() for name, pyfunc in models.items()}
    if labels["bfloat16"] != labels["float32"]:
        raise BenchError("the pyfunc in bfloat16 labelled the 64 digits otherwise than in float32")
    rates: dict[str, list[float]] = {name: [] for name in TYPES}
    for _ in range(detail["rounds"]):
        for name, pyfunc in models.items():

            def step(pyfunc=pyfunc) -> int:
                pyfunc.predict(frame)
                return len(frame)

            rates[name].append(throughput(step, mode.seconds(3.0, 0.5))[0])
    return [
        Figure("precision", f"{IN_PROCESS}, {name}", statistics.median(rates[name]), "images/s", detail)
        for name in TYPES
    ]


def through_gateway(mode: Mode, model: ModelUnderTest, detail: dict) -> list[Figure]:
    images, _ = mnist_test(64)
    bodies = {1: request_body(images[:1]), 64: request_body(images)}
    rates: dict[tuple[str, str], list[float]] = {(name, load): [] for name in TYPES for load in (C32, IMAGES_64)}
    answers = {}
    for _ in range(detail["rounds"]):
        for name in TYPES:
            server = processes.gateway(model.tracking_uri, model.directory, *OPTIMISED_ARGS, env={DTYPE_ENV: name})
            with processes.running(server, "/ready"):
                answers[name] = _labels(server.url, bodies[64])
                run_wrk(server.url, bodies[1], 8, mode.seconds(2.0, 0.5))  # warm-up, not recorded
                for load, body, connections, images_each in ((C32, bodies[1], 32, 1), (IMAGES_64, bodies[64], 8, 64)):
                    result = run_wrk_answered(server.url, body, connections, mode.seconds(8.0, 1.0))
                    if result.errors:
                        raise BenchError(f"gateway in {name}: {result.errors} requests failed, {load}")
                    if not result.requests:
                        raise BenchError(f"gateway in {name}: no request was answered under load, {load}")
                    rates[name, load].append(result.rps * images_each)
        if answers["bfloat16"] != answers["float32"]:
            raise BenchError("the gateway's answers to the 64 digits differ between bfloat16 and float32")
    return [
        Figure("precision", f"{GATEWAY}, {load}, {name}", statistics.median(values), "images/s", detail)
        for (name, load), values in rates.items()
    ]


def _labels(url: str, body: bytes) -> list[int]:
    import httpx

    answer = httpx.post(f"{url}/invocations", content=body, headers={"Content-Type": "application/json"}, timeout=60)
    answer.raise_for_status()
    return [row["label"] for row in answer.json()["predictions"]]
