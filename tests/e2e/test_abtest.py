"""Closing the A/B loop against real gateways and real models of known, different quality:
the inference log, feedback, the decision, automatic promotion and rollback, shadow traffic, and
no logged prediction lost on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
from mlflow import MlflowClient

from mnist_mlops.common.cores import threads_each
from mnist_mlops.registry.history import read as read_history
from mnist_mlops.serve.gateway.control.launcher import GATEWAY_CORES
from mnist_mlops.serve.model import THREADS_ENV
from tests.e2e.gateway_helpers import PIXELS, start_gateway, store_with
from tests.helpers import PROJECT_ROOT, subprocess_env

FAST = ["--backend_mode", "warm", "--poll_interval", "1"]


def replay(gateway, count: int, offset: int = 0, feedback: float = 1.0) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_mlops.serve.gateway.replay",
            "--url",
            gateway.url,
            "--key",
            gateway.predict_key,
            "--count",
            str(count),
            "--offset",
            str(offset),
            "--feedback",
            str(feedback),
            "--json",
            "--concurrency",
            "8",
        ],
        env=subprocess_env(gateway.uri),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.stdout, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def abtest(gateway, log, *args: str) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_mlops.registry",
            "--tracking_uri",
            gateway.uri,
            "abtest",
            "--log",
            str(log),
            "--json",
            "--min_accuracy",
            "0.3",
            *args,
        ],
        env=subprocess_env(gateway.uri, MNIST_ACTOR="ab-test"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_a_worse_challenger_is_found_out_and_rolled_back_through_the_registry(trained_store, weak_model, tmp_path):
    uri = store_with(trained_store, tmp_path, "tiny", weak_model)
    log = tmp_path / "inference.db"
    args = ("--split", "champion=50,challenger=50", "--inference_log", str(log), *FAST)
    # Without OpenMP's variable (the suite sets it for its workers) the gateway picks the threads.
    gateway = start_gateway(uri, tmp_path, *args, unset=("OMP_NUM_THREADS",))
    try:
        if sys.platform == "linux":  # each backend's environment, as it was started, from /proc
            for variant in gateway.variants().values():
                environ = Path(f"/proc/{variant['pid']}/environ").read_bytes().split(b"\0")
                assert f"{THREADS_ENV}={threads_each(2, reserved=GATEWAY_CORES)}".encode() in environ, variant
        summary = replay(gateway, 400)
        assert summary["failed"] == {} and summary["feedback_recorded"] == 400  # feedback joins every answer
        first = abtest(gateway, log)["report"]
        assert first["decision"] == "rollback", first["reasons"]
        assert first["champion"]["feedback"] + first["challenger"]["feedback"] == 400
        assert first["champion"]["accuracy"] > first["challenger"]["accuracy"]
        low, high = first["champion"]["ci95"]
        assert low < first["champion"]["accuracy"] < high
        replay(gateway, 200, offset=400)
        again = abtest(gateway, log)["report"]  # checked again with more data: the decision holds
        assert again["decision"] == "rollback"
        assert again["sequential"]["at_sample"] == first["sequential"]["at_sample"]
        applied = abtest(gateway, log, "--apply")
        assert applied["move"]["action"] == "abtest-rollback"
        client = MlflowClient(uri, uri)
        assert "challenger" not in client.get_registered_model("mnist-cnn").aliases
        event = read_history(client, "mnist-cnn")[-1]
        assert event.action == "abtest-rollback" and event.figures["decision"] == "rollback"
        assert event.figures["challenger_live"]["feedback"] > 0
    finally:
        assert gateway.stop() == 0


def test_the_gateway_promotes_a_better_challenger_automatically(trained_store, weak_model, tmp_path):
    uri = store_with(trained_store, tmp_path, weak_model, "tiny")
    log = tmp_path / "inference.db"
    gateway = start_gateway(
        uri,
        tmp_path,
        "--split",
        "champion=50,challenger=50",
        "--inference_log",
        str(log),
        "--auto_promote",
        "--decision_interval",
        "1",
        "--min_accuracy",
        "0.5",
        *FAST,
    )
    try:
        client = MlflowClient(uri, uri)
        better = str(client.get_model_version_by_alias("mnist-cnn", "challenger").version)
        replay(gateway, 300)
        deadline = time.monotonic() + 60
        promoted = lambda: any(  # noqa: E731
            e.alias == "champion" and e.action == "auto-promote" for e in read_history(client, "mnist-cnn")
        )
        while time.monotonic() < deadline and not promoted():
            time.sleep(0.5)
        assert str(client.get_registered_model("mnist-cnn").aliases.get("champion")) == better
        event = [e for e in read_history(client, "mnist-cnn") if e.alias == "champion"][-1]
        assert event.action == "auto-promote" and event.to_version == better
        assert event.figures["decision"] == "promote" and "mSPRT" in event.figures["test"]
        # the gateway follows its own move: traffic now goes to the promoted version
        deadline = time.monotonic() + 60
        while gateway.variants()["champion"]["version"] != better and time.monotonic() < deadline:
            time.sleep(0.5)
        assert gateway.variants()["champion"]["version"] == better
    finally:
        assert gateway.stop() == 0


def test_an_injected_failure_rate_rolls_the_challenger_back_automatically(trained_store, tmp_path):
    uri = trained_store.copy_to(tmp_path)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PROJECT_ROOT / "tests/assets/faulty-model/model.py")
        )
    client = MlflowClient(uri, uri)
    faulty = str(client.create_model_version("mnist-cnn", info.model_uri, info.run_id).version)
    client.set_registered_model_alias("mnist-cnn", "challenger", faulty)
    log = tmp_path / "inference.db"
    gateway = start_gateway(
        uri,
        tmp_path,
        "--split",
        "champion=50,challenger=50",
        "--inference_log",
        str(log),
        "--auto_promote",
        "--decision_interval",
        "1",
        "--expose_variant",
        *FAST,
    )
    try:
        asyncio.run(_load(gateway, 300))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and read_history(client, "mnist-cnn")[-1].action != "auto-rollback":
            time.sleep(0.5)
        assert "challenger" not in client.get_registered_model("mnist-cnn").aliases
        events = read_history(client, "mnist-cnn")
        event = events[-1]
        assert event.action == "auto-rollback" and event.from_version == faulty, events
        assert "error rate" in event.reason
        assert event.figures["challenger_live"]["error_rate"] > 0.15
        # out of the split: everything is answered by the champion now
        responses = asyncio.run(_load(gateway, 40))
        assert {r.headers["X-Variant"] for r in responses} == {"champion"}
        assert all(r.status_code == 200 for r in responses)
    finally:
        assert gateway.stop() == 0


async def _load(gateway, count: int, concurrency: int = 8) -> list[httpx.Response]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(i: int) -> httpx.Response:
            async with limit:
                return await client.post(
                    f"{gateway.url}/invocations",
                    json=PIXELS,
                    headers=gateway.headers(**{"X-User-ID": f"u{i}"}),
                )

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_sigterm_under_load_loses_no_logged_prediction(trained_store, tmp_path):
    uri = trained_store.copy_to(tmp_path)
    log = tmp_path / "inference.db"
    gateway = start_gateway(uri, tmp_path, "--inference_log", str(log), *FAST)
    answered: list[str] = []
    stopped = asyncio.Event()

    async def load() -> None:
        async with httpx.AsyncClient(timeout=30) as client:

            async def worker(w: int) -> None:
                for _ in range(10_000):
                    try:
                        response = await client.post(
                            f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers()
                        )
                    except httpx.HTTPError:
                        return  # the gateway has stopped listening
                    if response.status_code == 200:
                        answered.append(response.headers["X-Request-ID"])
                    if len(answered) >= 300 and not stopped.is_set():
                        stopped.set()
                        gateway.process.send_signal(15)  # SIGTERM in the middle of the load

            await asyncio.gather(*(worker(w) for w in range(8)))

    asyncio.run(load())
    assert gateway.process.wait(timeout=60) == 0
    with sqlite3.connect(log) as db:
        logged = {row[0] for row in db.execute("SELECT request_id FROM predictions WHERE role='serve' AND status=200")}
    assert len(answered) >= 300
    assert set(answered) <= logged, f"{len(set(answered) - logged)} answered predictions missing from the log"
