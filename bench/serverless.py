"""Scale to zero (``--min_replicas 0``), against what it replaces, in one run:

- the first request to a variant at zero replicas, held while its backend is forked from the warm
  pool and answers a real prediction: p50 and p99 over many cold wakes (the warm pool already up),
  and the very first one (the warm pool starts too), against stock ``mlflow models serve``'s launch
  to first correct answer measured here;
- the memory an idle A/B gateway holds (proportional set size of the gateway and every process it
  started, so pages a fork shares with the warm pool count once): always on, against scaled to
  zero before any request and after its variants have woken and slept again.
"""

from __future__ import annotations

import statistics
import time

import httpx

from bench import processes
from bench.coldstart import process_cold_start
from bench.core import BenchError, Figure, Mode, ModelUnderTest, mnist_test, request_body
from tests.helpers import tree_pss_mib

SECTION = "serverless"
IDLE_AFTER = 1.0  # seconds: short, so that many cold wakes fit in a run
A_B = ("--split", "champion=50,challenger=50", "--backend_mode", "warm")


def _variants(url: str) -> dict[str, dict]:
    return {v["alias"]: v for v in httpx.get(f"{url}/variants", timeout=10).json()["variants"]}


def _wait_asleep(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(v["state"] != "idle" for v in _variants(url).values()):
        if time.monotonic() > deadline:
            raise BenchError(f"the variants did not scale to zero: {_variants(url)}")
        time.sleep(0.05)
    time.sleep(0.5)  # the retired backends' processes exit after they drained


def _first_answer(url: str, body: bytes, label: int) -> float:
    started = time.perf_counter()
    answer = httpx.post(
        f"{url}/invocations", content=body, headers={"Content-Type": "application/json", "X-User-ID": "u"}, timeout=120
    )
    if answer.status_code != 200 or answer.json()["predictions"][0]["label"] != label:
        raise BenchError(f"a request at zero replicas was not answered right: {answer.status_code} {answer.text[:200]}")
    return time.perf_counter() - started


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    images, labels = mnist_test(1)
    body, label = request_body(images), int(labels[0])
    stock = process_cold_start(
        processes.mlflow_serve(model.model_uri, model.tracking_uri, model.directory), body, label
    )
    figures = [Figure(SECTION, "stock mlflow models serve: launch to first correct answer", stock, "s")]

    always_on = processes.gateway(model.tracking_uri, model.directory, *A_B)
    with processes.running(always_on, "/ready"):
        _first_answer(always_on.url, body, label)
        time.sleep(1.0)
        figures.append(
            Figure(SECTION, "idle A/B gateway, always on: memory", tree_pss_mib(always_on.process.pid), "MiB")
        )

    wakes = mode.count(20, 3)
    scaled = processes.gateway(
        model.tracking_uri, model.directory, *A_B, "--min_replicas", "0", "--scale_to_zero_after", str(IDLE_AFTER)
    )
    with processes.running(scaled, "/ready"):
        _wait_asleep(scaled.url)
        before = tree_pss_mib(scaled.process.pid)
        first = _first_answer(scaled.url, body, label)
        times = []
        for _ in range(wakes):
            _wait_asleep(scaled.url)
            times.append(_first_answer(scaled.url, body, label))
        _wait_asleep(scaled.url)
        after = tree_pss_mib(scaled.process.pid)
    times.sort()
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
    detail = {"wakes": wakes, "p99_s": round(p99, 3), "runs": [round(t, 3) for t in times]}
    figures += [
        Figure(SECTION, "request at zero replicas, warm pool up: p50", statistics.median(times), "s", detail),
        Figure(SECTION, "request at zero replicas, warm pool up: p99", p99, "s", detail),
        Figure(SECTION, "the very first request (the warm pool starts too)", first, "s"),
        Figure(SECTION, "idle A/B gateway at zero, before any request: memory", before, "MiB"),
        Figure(SECTION, "idle A/B gateway at zero, after its variants slept again: memory", after, "MiB"),
    ]
    return figures
