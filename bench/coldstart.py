"""Cold start: from launching a server to its first correct answer (median of several).

Three ways, for the same registry model URI: stock ``mlflow models serve``; ``serve.backend``
(MLflow's scoring app without the CLI, a fresh interpreter); and a fork of the warm pool
(``serve.warm_pool``), which pays the imports once, beforehand: its own start is reported too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from bench import processes
from bench.core import BenchError, Figure, Mode, ModelUnderTest, answer_rows, mnist_test, request_body


def first_correct_answer(url: str, body: bytes, label: int, alive, started: float, timeout: float = 300.0) -> float:
    """Seconds from ``started`` until ``url`` answers ``body`` with ``label`` (MLflow's answer
    form or a bare list of rows), while ``alive()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise BenchError(f"the server at {url} exited before answering")
        with contextlib.suppress(httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
            answer = httpx.post(
                f"{url}/invocations", content=body, headers={"Content-Type": "application/json"}, timeout=10
            )
            if answer.status_code == 200 and answer_rows(answer.json())[0]["label"] == label:
                return time.perf_counter() - started
        time.sleep(0.01)
    raise BenchError(f"no correct answer from {url} within {timeout:.0f}s")


def process_cold_start(server: processes.Server, body: bytes, label: int) -> float:
    started = server.start()
    try:
        return first_correct_answer(server.url, body, label, lambda: server.process.poll() is None, started)
    finally:
        server.stop()


class Pool:
    def __init__(self, tracking_uri: str) -> None:
        self.path = os.path.join(tempfile.mkdtemp(prefix="bench-pool-"), "pool.sock")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mnist_mlops.serve.warm_pool", "--socket", self.path, "--registry_uris"],
            env=processes.environment(tracking_uri),
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        if self.process.stdout.readline().strip() != b"ready":
            raise BenchError("the warm pool did not start")
        self.start_seconds = time.perf_counter() - started

    def cold_start(self, model_uri: str, body: bytes, label: int) -> float:
        port = processes.free_port()
        started = time.perf_counter()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(self.path)
            client.sendall((json.dumps({"model_uri": model_uri, "port": port}) + "\n").encode())
            pid = json.loads(client.makefile().readline())["pid"]
        try:
            alive = lambda: os.path.exists(f"/proc/{pid}")  # noqa: E731
            return first_correct_answer(f"http://127.0.0.1:{port}", body, label, alive, started)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    images, labels = mnist_test(1)
    body, label = request_body(images), int(labels[0])
    runs = mode.count(5, 1)
    results = {
        "mlflow models serve": [
            process_cold_start(
                processes.mlflow_serve(model.model_uri, model.tracking_uri, model.directory), body, label
            )
            for _ in range(runs)
        ],
        "mnist_mlops.serve.backend (MLflow's scoring app, fresh interpreter)": [
            process_cold_start(
                processes.fast_backend(model.model_uri, model.tracking_uri, model.directory), body, label
            )
            for _ in range(runs)
        ],
    }
    pool = Pool(model.tracking_uri)
    try:
        results["warm pool fork (serve.warm_pool)"] = [
            pool.cold_start(model.model_uri, body, label) for _ in range(runs)
        ]
    finally:
        pool.stop()
    figures = [
        Figure(
            "cold start",
            f"{name}: launch to first correct answer",
            statistics.median(times),
            "s",
            {"runs": [round(t, 2) for t in times]},
        )
        for name, times in results.items()
    ]
    figures.append(Figure("cold start", "warm pool: its own start (once, before any backend)", pool.start_seconds, "s"))
    return figures
