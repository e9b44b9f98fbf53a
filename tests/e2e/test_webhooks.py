"""Registry events instead of polling, with real parts: a real ``mlflow server`` on a SQLite store
sends its signed alias webhooks to a real gateway whose polling is as good as off (an hour).
``mnist-gateway webhook register`` sets the webhook up; an alias moved through the tracking server
is served within seconds (the gate on follow included); unsigned, wrongly signed, stale and
replayed deliveries get 401 and change nothing, and even a validly signed one only makes the
gateway read the registry: it cannot name what is served."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from cryptography.fernet import Fernet
from mlflow import MlflowClient

from mnist_mlops.serve.gateway.webhooks import signature
from tests.e2e.gateway_helpers import PIXELS, model_location, samples, start_gateway
from tests.helpers import free_port, start_process, stop_process, subprocess_env, wait_for_http

SECRET = "webhook-secret-for-the-tests-0123456789"


@pytest.fixture(scope="module")
def setup(trained_store, tmp_path_factory):
    directory = tmp_path_factory.mktemp("webhooks")
    store = trained_store.copy_to(directory / "store")
    client = MlflowClient(store, store)
    client.create_model_version("mnist-cnn", model_location(client))  # v2, the same training
    client.set_registered_model_alias("mnist-cnn", "champion", "1")
    port = free_port()
    command = ["mlflow", "server", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)]
    server = start_process(
        [*command, "--workers", "1"],
        subprocess_env(
            # A receiver on a loopback address: MLflow allows only https and public addresses by
            # default (its SSRF protection); docs/gateway.md says why that stays so on a network.
            MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
            MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
            MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=Fernet.generate_key().decode(),
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        ),
        directory / "server.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", server, timeout=180)
        gateway = start_gateway(
            url,
            directory,
            "--poll_interval",
            "3600",
            "--backend_mode",
            "warm",
            environment={"MNIST_WEBHOOK_SECRET": SECRET},
        )
    except BaseException:
        stop_process(server)
        raise
    yield url, gateway
    gateway.stop()
    stop_process(server)


def post(gateway, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{gateway.url}/hooks/mlflow", content=body, headers=headers, timeout=10)


def signed(body: bytes, secret: str = SECRET, at: float | None = None, delivery_id: str | None = None) -> dict:
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(time.time() if at is None else at))
    return {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": signature(secret, delivery_id, stamp, body),
        "Content-Type": "application/json",
    }


def webhook_counts(gateway) -> dict[str, float]:
    metrics = httpx.get(f"{gateway.url}/metrics", headers=gateway.headers(), timeout=10).text
    return {s.labels["outcome"]: s.value for s in samples(metrics, "gateway_webhooks_total")}


def test_forged_stale_and_replayed_deliveries_are_refused_and_change_nothing(setup):
    _, gateway = setup
    forged = json.dumps(
        {"entity": "model_version_alias", "action": "created", "data": {"name": "mnist-cnn", "alias": "champion"}}
        | {"timestamp": "now"}
    ).encode()
    before = gateway.variants()["champion"]["version"]
    cases = {
        "unsigned": {"Content-Type": "application/json"},
        "another secret": signed(forged, secret="not-the-gateways-secret-at-all"),
        "stale": signed(forged, at=time.time() - 3600),
    }
    for case, headers in cases.items():
        answer = post(gateway, forged, headers)
        assert answer.status_code == 401, (case, answer.text)
        assert answer.json()["error_code"] == "UNAUTHENTICATED" and "Traceback" not in answer.text
    genuine = signed(forged)
    assert post(gateway, forged, genuine).json()["accepted"] is True
    replay = post(gateway, forged, genuine)
    assert replay.status_code == 401 and "replay" in replay.json()["message"]
    time.sleep(2)  # the accepted delivery made the gateway read the registry: the alias is where it was
    assert gateway.variants()["champion"]["version"] == before
    assert webhook_counts(gateway)["refused"] >= 4


def test_an_alias_moved_on_the_tracking_server_is_served_within_seconds_without_polling(setup):
    server, gateway = setup
    register = subprocess.run(
        [sys.executable, "-m", "mnist_mlops.serve.gateway.cli", "webhook", "register", "--url", gateway.url],
        env=subprocess_env(server, MNIST_WEBHOOK_SECRET=SECRET),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert register.returncode == 0, register.stderr
    assert "model_version_alias.created" in register.stdout
    assert gateway.variants()["champion"]["version"] == "1"
    accepted = webhook_counts(gateway).get("accepted", 0)
    moved = time.monotonic()
    MlflowClient(server, server).set_registered_model_alias("mnist-cnn", "champion", "2")
    deadline = moved + 120
    while (champion := gateway.variants()["champion"])["version"] != "2" or champion["state"] != "ready":
        assert time.monotonic() < deadline, f"not followed after 120 s without polling: {champion}"
        time.sleep(0.05)
    print(f"alias moved -> served by v2 (webhook, gate on follow included): {time.monotonic() - moved:.2f} s")
    assert webhook_counts(gateway)["accepted"] == accepted + 1
    answer = httpx.post(
        f"{gateway.url}/invocations",
        json=PIXELS,
        headers=gateway.headers(gateway.admin_key),
        timeout=60,
    )
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "2"


def test_register_without_a_secret_is_one_line(setup):
    server, gateway = setup
    result = subprocess.run(
        [sys.executable, "-m", "mnist_mlops.serve.gateway.cli", "webhook", "register", "--url", gateway.url],
        env={k: v for k, v in subprocess_env(server).items() if k != "MNIST_WEBHOOK_SECRET"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "MNIST_WEBHOOK_SECRET" in result.stderr
