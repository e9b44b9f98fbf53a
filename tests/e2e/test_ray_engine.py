"""The gateway on Ray Serve (``--engine ray``), with a real local Ray started by the gateway: the
A/B split is served by one Ray Serve application multiplexed by registry version, and answers as
``mlflow models serve`` does, row for row; keys, sticky assignment, response headers, alias moves
and feedback work as on local backends; the Ray application itself refuses a call that names no
version; and stopping the gateway stops its Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import numpy as np
import psutil
import pytest
from mlflow import MlflowClient

from tests.e2e.gateway_helpers import start_gateway, two_version_store
from tests.helpers import free_port, start_process, stop_process, subprocess_env, wait_for_http


def digits_body(mnist_test, count: int = 24) -> dict:
    images = mnist_test[0][:count]
    rows = [[" ".join(str(int(v)) for v in image.reshape(-1))] for image in images]
    return {"dataframe_split": {"columns": ["pixels"], "data": rows}}


@pytest.fixture(scope="module")
def setup(trained_store, tmp_path_factory):
    directory = tmp_path_factory.mktemp("ray-engine")
    uri = two_version_store(trained_store, directory)
    port = free_port()
    serve = ["mlflow", "models", "serve", "-m", "models:/mnist-cnn/1", "--env-manager", "local"]
    stock = start_process(
        [*serve, "-p", str(port), "-h", "127.0.0.1"],
        subprocess_env(uri),
        directory / "stock.log",
    )
    ray_port = free_port()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", stock, timeout=180)
        gateway = start_gateway(
            uri,
            directory,
            "--engine",
            "ray",
            "--ray_http_port",
            str(ray_port),
            "--split",
            "champion=50,challenger=50",
            "--poll_interval",
            "1",
            "--max_replicas",
            "2",
        )
    except BaseException:
        stop_process(stock)
        raise
    yield gateway, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ray_port}"
    gateway.stop()
    stop_process(stock)


def ask(gateway, body: dict, user: str) -> httpx.Response:
    headers = gateway.headers(gateway.admin_key, **{"X-User-ID": user})
    return httpx.post(f"{gateway.url}/invocations", json=body, headers=headers, timeout=120)


def test_both_variants_answer_as_mlflow_models_serve_row_for_row(setup, mnist_test):
    gateway, stock, _ = setup
    body = digits_body(mnist_test)
    expected = httpx.post(f"{stock}/invocations", json=body, timeout=120).json()["predictions"]
    seen = set()
    for user in (f"user-{i}" for i in range(40)):
        answer = ask(gateway, body, user)
        assert answer.status_code == 200, answer.text
        seen.add(answer.headers["X-Variant"])
        rows = answer.json()["predictions"]
        assert [r["label"] for r in rows] == [r["label"] for r in expected]
        np.testing.assert_allclose(
            [r["probabilities"] for r in rows], [r["probabilities"] for r in expected], rtol=1e-5, atol=1e-6
        )
        if seen == {"champion", "challenger"}:
            break
    assert seen == {"champion", "challenger"}
    variants = gateway.variants()
    assert {v["state"] for v in variants.values()} == {"ready"}
    assert {v["backend"] for v in variants.values()} == {setup[2]}  # one Ray Serve application serves both


def test_keys_stickiness_and_headers_hold_on_ray(setup, mnist_test):
    gateway, _, _ = setup
    body = digits_body(mnist_test, 1)
    assert httpx.post(f"{gateway.url}/invocations", json=body, timeout=30).status_code == 401
    first = ask(gateway, body, "sticky-user")
    again = ask(gateway, body, "sticky-user")
    assert first.headers["X-Variant"] == again.headers["X-Variant"] and first.headers["X-Request-ID"]
    feedback = httpx.post(
        f"{gateway.url}/feedback",
        json={"request_id": first.headers["X-Request-ID"], "label": int(mnist_test[1][0])},
        headers=gateway.headers(gateway.admin_key),
        timeout=30,
    )
    assert feedback.status_code in (200, 201), feedback.text


def test_the_ray_application_refuses_a_call_that_names_no_version(setup, mnist_test):
    _, _, ray = setup
    body = json.dumps(digits_body(mnist_test, 1))
    bare = httpx.post(f"{ray}/invocations", content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert bare.status_code == 400 and "serve_multiplexed_model_id" in bare.json()["message"]
    named = httpx.post(
        f"{ray}/invocations",
        content=body,
        headers={"Content-Type": "application/json", "serve_multiplexed_model_id": "2"},
        timeout=120,
    )
    assert named.status_code == 200 and len(named.json()["predictions"]) == 1
    unknown = httpx.post(
        f"{ray}/invocations",
        content=body,
        headers={"Content-Type": "application/json", "serve_multiplexed_model_id": "99"},
        timeout=120,
    )
    assert unknown.status_code == 404 and "v99" in unknown.json()["message"]


def wait_for_version(gateway, alias: str, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        variant = gateway.variants()[alias]
        if variant["version"] == version and variant["state"] == "ready":
            return
        assert time.monotonic() < deadline, variant
        time.sleep(0.1)


def test_an_alias_moved_in_the_registry_is_followed_on_ray(setup, mnist_test):
    gateway, _, _ = setup
    MlflowClient(gateway.uri, gateway.uri).set_registered_model_alias("mnist-cnn", "challenger", "1")
    wait_for_version(gateway, "challenger", "1")
    body = digits_body(mnist_test, 1)
    for user in (f"mover-{i}" for i in range(40)):
        answer = ask(gateway, body, user)
        if answer.headers["X-Variant"] == "challenger":
            assert answer.headers["X-Model-Version"] == "1"
            break
    else:
        pytest.fail("no request landed on the challenger")


def test_a_second_gateway_routes_to_the_running_application_without_joining_ray(setup, mnist_test, tmp_path):
    gateway, _, ray = setup
    second = start_gateway(gateway.uri, tmp_path, "--engine", "ray", "--ray_serve_url", ray)
    try:
        answer = ask(second, digits_body(mnist_test, 2), "someone")
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2
        assert {v["backend"] for v in second.variants().values()} == {ray}
        assert not [p for p in psutil.Process(second.process.pid).children(recursive=True) if "ray" in p.name()]
    finally:
        assert second.stop() == 0
    assert ask(gateway, digits_body(mnist_test, 1), "someone").status_code == 200  # the application stays


def test_stopping_the_gateway_stops_the_ray_it_started(setup):
    gateway, _, _ = setup
    ray = [p for p in psutil.Process(gateway.process.pid).children(recursive=True) if "ray" in " ".join(p.cmdline())]
    assert ray, "no Ray process under the gateway"
    assert gateway.stop() == 0
    left = [p.pid for p in ray if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, left


def test_a_ray_address_without_the_ray_engine_is_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "mnist_mlops.serve.gateway.cli", "--ray_address", "auto"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--engine ray" in result.stderr
