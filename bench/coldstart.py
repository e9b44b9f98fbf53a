"""Cold start: from launching a server to its first correct answer (median of several)."""

from __future__ import annotations

import statistics
import time

import httpx

from bench import processes
from bench.core import BenchError, Figure, Mode, ModelUnderTest, mnist_test, request_body


def first_correct_answer(server: processes.Server, body: bytes, label: int, timeout: float = 300.0) -> float:
    started = server.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise BenchError(f"{server.name} exited: {server.tail()}")
            try:
                answer = httpx.post(
                    f"{server.url}/invocations",
                    content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=10,
                )
                if answer.status_code == 200 and answer.json()["predictions"][0]["label"] == label:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise BenchError(f"{server.name} gave no correct answer within {timeout:.0f}s")
    finally:
        server.stop()


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    images, labels = mnist_test(1)
    body, label = request_body(images), int(labels[0])
    starters = {
        "mlflow models serve": lambda: processes.mlflow_serve(model.model_uri, model.tracking_uri, model.directory),
        "serve.backend (MLflow's scoring app, preloaded)": lambda: processes.fast_backend(
            model.model_uri, model.tracking_uri, model.directory
        ),
    }
    figures = []
    for name, make in starters.items():
        times = [first_correct_answer(make(), body, label) for _ in range(mode.count(5, 1))]
        figures.append(
            Figure(
                "cold start",
                f"{name}: launch to first correct answer",
                statistics.median(times),
                "s",
                {"runs": [round(t, 2) for t in times]},
            )
        )
    return figures
