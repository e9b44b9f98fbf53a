"""Scale to zero (``--min_replicas 0``), against what it replaces, in one run:

- the first request to a variant at zero replicas, held while its backend is forked from the warm
  pool and answers a real prediction: p50 and p99 over many cold wakes (the warm pool already up),
  and the very first one (the warm pool starts too), against stock ``mlflow models serve``'s launch
  to first correct answer measured here;
- the memory an idle A/B gateway holds (proportional set size of the gateway and every process it
  started, so pages a fork shares with the warm pool count once): always on (with warm-pool
  backends, and with the default ``mlflow models serve`` ones), against scaled to zero before any
  request and after its variants have woken and slept again;
- a step load through the A/B split (idle, then 32 clients, then idle): failed requests, the
  replicas over time, p99 while the variants scale up from zero, the time back to zero, and the
  throughput against the same gateway with fixed replicas, in interleaved rounds;
- an alias moved on a real ``mlflow server`` to the new version serving: through the registry's
  signed webhook (polling at an hour), against polling at the default interval, in alternation.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time

import httpx

from bench import processes
from bench.coldstart import process_cold_start
from bench.core import BenchError, Figure, Mode, ModelUnderTest, mnist_test, request_body
from bench.load import LoadResult, require_wrk, run_wrk
from tests.helpers import tree_pss_mib

SECTION = "serverless"
IDLE_AFTER = 1.0  # seconds: short, so that many cold wakes fit in a run
A_B = ("--split", "champion=50,challenger=50", "--backend_mode", "warm")
STEP_CLIENTS = 32
POLL_INTERVAL = 5.0  # the gateway's default --poll_interval
WEBHOOK_SECRET = "bench-webhook-secret-0123456789abcdef"
SCALE_UP_SECONDS = 2  # the first part of a step, from zero replicas: its p99 is the scale-up's


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


class ReplicaSampler:
    """The replicas serving, summed over the variants, every ``every`` seconds, in a thread."""

    def __init__(self, url: str, every: float = 0.25) -> None:
        self.url, self.every, self.counts = url, every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            replicas = sum(v["replicas"] for v in _variants(self.url).values())
            self.counts.append((round(time.monotonic() - started, 2), replicas))
            self._stop.wait(self.every)

    def __enter__(self) -> ReplicaSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _step(url: str, body: bytes, seconds: float, from_zero: bool) -> tuple[LoadResult, LoadResult, list, float]:
    """One step of load: the scale-up part and the rest, the replicas meanwhile, and (from zero)
    the seconds from the end of the load until every variant is back at zero."""
    if from_zero:
        _wait_asleep(url)
    with ReplicaSampler(url) as sampler:
        rising = run_wrk(url, body, STEP_CLIENTS, SCALE_UP_SECONDS)
        steady = run_wrk(url, body, STEP_CLIENTS, seconds)
        ended = time.monotonic()
        back = 0.0
        if from_zero:
            while any(v["replicas"] for v in _variants(url).values()):
                if time.monotonic() - ended > 120:
                    raise BenchError(f"the variants did not scale back to zero: {_variants(url)}")
                time.sleep(0.05)
            back = time.monotonic() - ended
    return rising, steady, sampler.counts, back


def _step_figures(steps: dict[str, list], seconds: float) -> list[Figure]:
    figures = []
    for name, runs in steps.items():
        rps = [(r.requests + s.requests) / (r.seconds + s.seconds) for r, s, _, _ in runs]
        failed = sum(r.errors + s.errors for r, s, _, _ in runs)
        detail = {
            "rounds": len(runs),
            "clients": STEP_CLIENTS,
            "seconds": SCALE_UP_SECONDS + seconds,
            "runs_rps": [round(x, 1) for x in rps],
        }
        figures += [
            Figure(
                SECTION, f"step load c{STEP_CLIENTS}, {name}: requests/s", statistics.median(rps), "requests/s", detail
            ),
            Figure(SECTION, f"step load c{STEP_CLIENTS}, {name}: failed requests", failed, "requests", detail),
            Figure(
                SECTION,
                f"step load c{STEP_CLIENTS}, {name}: p99 of the first {SCALE_UP_SECONDS} s",
                statistics.median(r.p99_ms for r, _, _, _ in runs),
                "ms",
            ),
        ]
    serverless = steps["at zero when idle"]
    last_counts = serverless[-1][2]
    figures += [
        Figure(
            SECTION,
            "step load, at zero when idle: replicas over time (last round)",
            max(count for _, count in last_counts),
            "replicas",
            {"samples_s_replicas": last_counts[:: max(1, len(last_counts) // 60)]},
        ),
        Figure(
            SECTION,
            "step load, at zero when idle: load end to zero replicas",
            statistics.median(back for _, _, _, back in serverless),
            "s",
            {"idle_after_s": IDLE_AFTER},
        ),
    ]
    return figures


def _served_version(url: str) -> str | None:
    champion = _variants(url)["champion"]
    return champion["version"] if champion["state"] == "ready" else None


def _move(registry, version: str, followers: dict[str, str]) -> dict[str, float]:
    """Seconds from the alias moved on the tracking server to each gateway (name -> URL) serving
    ``version``."""
    moved = time.perf_counter()
    registry.set_registered_model_alias("mnist-cnn", "champion", version)
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(seen) < len(followers):
        for name, url in followers.items():
            if name not in seen and _served_version(url) == version:
                seen[name] = time.perf_counter() - moved
        if time.monotonic() > deadline:
            raise BenchError(f"not followed to v{version} within 120 s: {seen}")
        time.sleep(0.01)
    return seen


def _alias_moves(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    """Webhook against polling: two gateways follow the same champion alike (warm backends, no
    gate on follow, which costs the same whatever woke the follower); each move is timed on both."""
    from cryptography.fernet import Fernet
    from mlflow import MlflowClient

    server = processes.mlflow_server(
        model.tracking_uri,
        model.directory,
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=Fernet.generate_key().decode(),
    )
    common = ("--backend_mode", "warm", "--no_follow_gate", "--tracking_uri")
    moves = mode.count(10, 2)
    times: dict[str, list[float]] = {"webhook": [], "polling": []}
    with processes.running(server, "/health"):
        hooked = processes.gateway(model.tracking_uri, model.directory, *common, server.url, "--poll_interval", "3600")
        hooked.env["MNIST_WEBHOOK_SECRET"] = WEBHOOK_SECRET
        polled = processes.gateway(
            model.tracking_uri, model.directory, *common, server.url, "--poll_interval", str(POLL_INTERVAL)
        )
        with processes.running(hooked, "/ready"), processes.running(polled, "/ready"):
            register = [sys.executable, "-m", "mnist_mlops.serve.gateway.cli", "webhook", "register"]
            register += ["--url", hooked.url, "--tracking_uri", server.url]
            done = subprocess.run(
                register,
                env=processes.environment(server.url, MNIST_WEBHOOK_SECRET=WEBHOOK_SECRET),
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode != 0:
                raise BenchError(f"webhook register failed: {done.stderr.strip()}")
            registry = MlflowClient(server.url, server.url)
            followers = {"webhook": hooked.url, "polling": polled.url}
            for index in range(moves):
                for name, seconds in _move(registry, "2" if index % 2 == 0 else "1", followers).items():
                    times[name].append(seconds)
            registry.set_registered_model_alias("mnist-cnn", "champion", "1")  # as the other sections expect
    return [
        Figure(
            SECTION,
            f"alias moved to new version serving, {name}: p50",
            statistics.median(runs),
            "s",
            {"moves": len(runs), "runs": [round(t, 3) for t in runs], "poll_interval_s": POLL_INTERVAL},
        )
        for name, runs in times.items()
    ]


def _stock_backends_memory(model: ModelUnderTest, body: bytes, label: int) -> Figure:
    """An idle A/B gateway always on with the default backends (``mlflow models serve``). Full
    mode only: two stock servers to start, and the same gateway code as the warm-backend one."""
    stock_backends = processes.gateway(model.tracking_uri, model.directory, *A_B[:2])
    with processes.running(stock_backends, "/ready"):
        _first_answer(stock_backends.url, body, label)
        time.sleep(1.0)
        memory = tree_pss_mib(stock_backends.process.pid)
    return Figure(SECTION, "idle A/B gateway, always on, mlflow backends: memory", memory, "MiB")


def measure(mode: Mode, model: ModelUnderTest) -> list[Figure]:
    require_wrk()
    images, labels = mnist_test(1)
    body, label = request_body(images), int(labels[0])
    stock = process_cold_start(
        processes.mlflow_serve(model.model_uri, model.tracking_uri, model.directory), body, label
    )
    figures = [Figure(SECTION, "stock mlflow models serve: launch to first correct answer", stock, "s")]

    always_on = processes.gateway(model.tracking_uri, model.directory, *A_B)
    scaled = processes.gateway(
        model.tracking_uri, model.directory, *A_B, "--min_replicas", "0", "--scale_to_zero_after", str(IDLE_AFTER)
    )
    wakes, rounds, seconds = mode.count(20, 3), mode.count(3, 1), mode.seconds(13.0, 2.0)
    with processes.running(always_on, "/ready"), processes.running(scaled, "/ready"):
        _first_answer(always_on.url, body, label)
        time.sleep(1.0)
        figures.append(
            Figure(SECTION, "idle A/B gateway, always on: memory", tree_pss_mib(always_on.process.pid), "MiB")
        )
        if not mode.quick:  # the baseline: the same split on `mlflow models serve` backends
            figures.append(_stock_backends_memory(model, body, label))
        _wait_asleep(scaled.url)
        before = tree_pss_mib(scaled.process.pid)
        first = _first_answer(scaled.url, body, label)
        times = []
        for _ in range(wakes):
            _wait_asleep(scaled.url)
            times.append(_first_answer(scaled.url, body, label))
        _wait_asleep(scaled.url)
        after = tree_pss_mib(scaled.process.pid)
        steps = {"fixed replicas": [], "at zero when idle": []}
        for _ in range(rounds):  # interleaved: a slow moment of the machine hits both
            steps["fixed replicas"].append(_step(always_on.url, body, seconds, from_zero=False))
            steps["at zero when idle"].append(_step(scaled.url, body, seconds, from_zero=True))
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
    return figures + _step_figures(steps, seconds) + _alias_moves(mode, model)
