"""Scale to zero with real processes: a gateway started with ``--min_replicas 0`` runs no backend
until a request comes; the first request to a sleeping variant is held while its backend starts
from the warm pool and answers a real prediction, then answered (never failed); a burst wakes it
once; after the idle period it is back at zero with its process gone; past the held-request bound
a request gets 503 with ``Retry-After``; a version that cannot start backs off; each key's usage
per variant is what it sent; bad scaling options are one line."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from mlflow import MlflowClient

from tests.e2e.gateway_helpers import PIXELS, samples, start_gateway, two_version_store
from tests.helpers import running, subprocess_env, tree_pss_mib

SERVERLESS = ["--backend_mode", "warm", "--poll_interval", "1", "--min_replicas", "0"]


def states(gateway) -> dict[str, str]:
    return {alias: v["state"] for alias, v in gateway.variants().items()}


def wait_for_states(gateway, wanted: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while states(gateway) != wanted:
        assert time.monotonic() < deadline, f"states {states(gateway)}, expected {wanted}"
        time.sleep(0.1)


def counter(gateway, name: str, **labels: str) -> float:
    metrics = httpx.get(f"{gateway.url}/metrics", headers=gateway.headers(), timeout=10).text
    return sum(s.value for s in samples(metrics, name, **labels))


async def burst(gateway, count: int, headers: dict[str, str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120) as client:
        return await asyncio.gather(
            *(client.post(f"{gateway.url}/invocations", json=PIXELS, headers=headers) for _ in range(count))
        )


@pytest.fixture(scope="module")
def gateway(trained_store, tmp_path_factory):
    directory = tmp_path_factory.mktemp("serverless")
    uri = two_version_store(trained_store, directory)
    running = start_gateway(
        uri, directory, *SERVERLESS, "--split", "champion=50,challenger=50", "--scale_to_zero_after", "3"
    )
    yield running
    running.stop()


def test_an_idle_gateway_runs_no_backend_and_a_first_request_wakes_its_variant(gateway):
    wait_for_states(gateway, {"champion": "idle", "challenger": "idle"})
    assert all(v["pid"] is None for v in gateway.variants().values())
    asleep = tree_pss_mib(gateway.process.pid)
    headers = gateway.headers(gateway.admin_key, **{"X-User-ID": "first-user"})
    started = time.monotonic()
    answer = httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=headers, timeout=120)
    first = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    woken = answer.headers["X-Variant"]
    assert states(gateway)[woken] == "ready" and counter(gateway, "gateway_wakes_total", variant=woken) == 1
    awake = tree_pss_mib(gateway.process.pid)
    backend_pid = gateway.variants()[woken]["pid"]
    assert running(backend_pid)
    wait_for_states(gateway, {"champion": "idle", "challenger": "idle"}, timeout=30)  # the idle period: 3 s
    assert all(v["pid"] is None for v in gateway.variants().values())
    assert counter(gateway, "gateway_scaled_to_zero_total", variant=woken) >= 1
    deadline = time.monotonic() + 30  # its process gone too (stopped once it has drained)
    while running(backend_pid):
        assert time.monotonic() < deadline, f"backend {backend_pid} still runs after scaling to zero"
        time.sleep(0.1)
    back_at_zero = tree_pss_mib(gateway.process.pid)  # the warm pool stays: the next wake is a fork
    started = time.monotonic()
    again = httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=headers, timeout=120)
    assert again.status_code == 200 and again.headers["X-Variant"] == woken  # sticky per X-User-ID
    print(
        f"first request at zero: {first:.2f} s (the warm pool starts), again after scaling to zero: "
        f"{time.monotonic() - started:.2f} s; memory: {asleep:.0f} MiB before any request, {awake:.0f} MiB "
        f"with one variant awake, {back_at_zero:.0f} MiB back at zero"
    )


def test_a_burst_on_sleeping_variants_is_held_and_answered_with_one_wake_each(gateway):
    wait_for_states(gateway, {"champion": "idle", "challenger": "idle"}, timeout=30)
    before = {alias: counter(gateway, "gateway_wakes_total", variant=alias) for alias in ("champion", "challenger")}
    answers = asyncio.run(burst(gateway, 40, gateway.headers(gateway.admin_key)))
    assert [a.status_code for a in answers] == [200] * 40, [a.text for a in answers if a.status_code != 200][:3]
    for alias in {a.headers["X-Variant"] for a in answers}:
        assert counter(gateway, "gateway_wakes_total", variant=alias) == before[alias] + 1


def test_past_the_held_bound_a_request_gets_503_and_retry_after(trained_store, tmp_path):
    uri = two_version_store(trained_store, tmp_path)
    bounded = start_gateway(uri, tmp_path, *SERVERLESS, "--max_held", "2", "--scale_to_zero_after", "600")
    try:
        wait_for_states(bounded, {"champion": "idle"})
        answers = asyncio.run(burst(bounded, 12, bounded.headers()))
        codes = sorted(a.status_code for a in answers)
        assert set(codes) <= {200, 503} and codes.count(200) >= 2 and 503 in codes, codes
        refused = next(a for a in answers if a.status_code == 503)
        assert refused.headers["Retry-After"] and "zero replicas" in refused.json()["message"]
        again = httpx.post(f"{bounded.url}/invocations", json=PIXELS, headers=bounded.headers(), timeout=60)
        assert again.status_code == 200  # awake now: the refused client's retry is answered
    finally:
        bounded.stop()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--min_replicas", "2"),  # above --max_replicas (1 by default)
        ("--max_replicas", "0"),
        ("--target_concurrency", "0"),
        ("--panic_window", "-1"),
        ("--stable_window", "1"),  # below --panic_window (6 by default)
        ("--scale_to_zero_after", "0"),
        ("--max_held", "0"),
    ],
)
def test_a_bad_scaling_option_is_one_line(option, value):
    result = subprocess.run(
        [sys.executable, "-m", "mnist_mlops.serve.gateway.cli", option, value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and option.lstrip("-") in result.stderr


def shadow_rows(log) -> int:
    if not log.exists():
        return 0
    with sqlite3.connect(log) as connection:
        query = "SELECT COUNT(*) FROM predictions WHERE role = 'shadow' AND status = 200"
        return connection.execute(query).fetchone()[0]


def test_a_sleeping_shadow_is_woken_by_the_champions_traffic(trained_store, tmp_path):
    uri = two_version_store(trained_store, tmp_path)
    shadowed = start_gateway(uri, tmp_path, *SERVERLESS, "--shadow", "challenger", "--scale_to_zero_after", "600")
    try:
        wait_for_states(shadowed, {"champion": "idle", "challenger": "idle"})
        deadline = time.monotonic() + 60
        while not shadow_rows(tmp_path / "mnist-inference.db"):
            assert time.monotonic() < deadline, states(shadowed)
            answer = httpx.post(f"{shadowed.url}/invocations", json=PIXELS, headers=shadowed.headers(), timeout=60)
            assert answer.status_code == 200
            time.sleep(0.2)
        assert states(shadowed) == {"champion": "ready", "challenger": "ready"}
    finally:
        shadowed.stop()


def test_a_version_that_cannot_wake_is_refused_fast_and_tried_again_only_after_a_backoff(trained_store, tmp_path):
    """Its first request waits for the failed start and gets 503 naming it; the next ones get 503
    at once with the backoff as Retry-After, without starting it again."""
    uri = trained_store.copy_to(tmp_path / "store")
    client = MlflowClient(uri, uri)
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    broken = client.create_model_version("mnist-cnn", str(not_a_model)).version
    client.set_registered_model_alias("mnist-cnn", "champion", str(broken))
    gateway = start_gateway(uri, tmp_path, *SERVERLESS)
    try:
        wait_for_states(gateway, {"champion": "idle"})
        first = httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers(), timeout=120)
        assert first.status_code == 503 and "failed to wake" in first.json()["message"], first.text
        again = httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers(), timeout=10)
        assert again.status_code == 503 and int(again.headers["Retry-After"]) >= 1
        assert "Traceback" not in again.text
        assert counter(gateway, "gateway_wake_failures_total", variant="champion") == 1  # no second start
        assert gateway.process.poll() is None
    finally:
        gateway.stop()


def usage_cli(gateway, key: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_mlops.serve.gateway.cli", "usage", "--url", gateway.url, *args],
        env=subprocess_env(gateway.uri, MNIST_API_KEY=key),
        capture_output=True,
        text=True,
        timeout=60,
    )


def admin_usage(gateway) -> dict:
    answer = httpx.get(f"{gateway.url}/admin/usage", headers=gateway.headers(gateway.admin_key), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_usage_per_key_and_variant_equals_the_traffic_sent(gateway):
    """What a serverless bill is made of, from the inference log: each key's requests and images
    per variant, read with ``mnist-gateway usage`` (admin only)."""
    two_images = {"dataframe_split": {"columns": ["pixels"], "data": PIXELS["dataframe_split"]["data"] * 2}}
    sent = {"svc-predict": (5, two_images), "other-client": (3, PIXELS)}
    for name, (count, body) in sent.items():
        for _ in range(count):
            answer = httpx.post(f"{gateway.url}/invocations", json=body, headers=gateway.headers(gateway.keys[name]))
            assert answer.status_code == 200
    result = usage_cli(gateway, gateway.admin_key, "--since", "10m", "--json")
    assert result.returncode == 0, result.stderr
    totals: dict[str, list[int]] = {}
    for row in json.loads(result.stdout)["usage"]:
        requests, images = totals.setdefault(row["key"], [0, 0])
        totals[row["key"]] = [requests + row["requests"], images + row["images"]]
        if row["key"] in sent:  # the backend's time is charged, and is part of the time in the gateway
            assert 0 < row["compute_seconds"] <= row["busy_seconds"], row
    assert totals["svc-predict"] == [5, 10] and totals["other-client"] == [3, 3]
    for name, (count, body) in sent.items():  # the same figures in /metrics, per key over the variants
        images = count * len(body["dataframe_split"]["data"])
        assert counter(gateway, "gateway_key_requests_total", key=name) == count
        assert counter(gateway, "gateway_key_images_total", key=name) == images
        assert counter(gateway, "gateway_key_compute_seconds_total", key=name) > 0
    table = usage_cli(gateway, gateway.admin_key, "--since", "10m")
    assert table.returncode == 0 and "other-client" in table.stdout and "compute_seconds" in table.stdout
    # Replica-seconds are metered every 15 s into the same log: the variants this module woke held some.
    deadline = time.monotonic() + 60
    while True:
        held = {row["variant"]: row["replica_seconds"] for row in admin_usage(gateway)["replicas"]}
        if held and all(seconds > 0 for seconds in held.values()):
            break
        assert time.monotonic() < deadline, held
        time.sleep(1)
    assert set(held) <= {"champion", "challenger"}
    assert sum(held.values()) <= counter(gateway, "gateway_replica_seconds_total") + 1
    assert "replica-seconds held:" in usage_cli(gateway, gateway.admin_key).stdout
    refused = usage_cli(gateway, gateway.predict_key)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "403" in refused.stderr
    bad = httpx.get(
        f"{gateway.url}/admin/usage", params={"since": "yesterday-ish"}, headers=gateway.headers(gateway.admin_key)
    )
    assert bad.status_code == 400 and "since" in bad.json()["message"]
