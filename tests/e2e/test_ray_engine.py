"""The gateway on Ray Serve (``--engine ray``), with a real local Ray started by the gateway: the
A/B split is served by one Ray Serve application multiplexed by registry version, and answers as
``mlflow models serve`` does, row for row; keys, sticky assignment, response headers, alias moves
and feedback work as on local backends; the Ray application itself refuses a call that names no
version, and batches concurrent calls without letting a bad one cost the others; stopping the
gateway stops its Ray. And ``--ray_address``: a gateway joins a cluster started by ``ray start
--head`` with a token, while a wrong token or an address with no Ray is one line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
def cluster(tmp_path_factory):
    """A Ray cluster started by ``ray start --head`` with token authentication, as Ray 2.60 sets it
    up: (its address, its process, the environment that holds its token). Started before the
    gateway of ``setup``, which must start a Ray of its own all the same (without an address,
    ``ray.init`` would join this one)."""
    directory = tmp_path_factory.mktemp("ray-cluster")
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    head = free_port()
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--port", str(head)]
    command += ["--num-cpus", "1", "--include-dashboard=false", "--disable-usage-stats"]
    process = start_process(command, subprocess_env() | auth, directory / "ray-head.log")
    address = f"127.0.0.1:{head}"
    try:
        deadline = time.monotonic() + 120
        while not port_open(head):
            assert process.poll() is None and time.monotonic() < deadline, (directory / "ray-head.log").read_text()
            time.sleep(0.2)
        yield address, process, auth
    finally:
        # Every process of the group has its SIGTERM; `ray start --block` itself then lingers in a
        # graceful shutdown for about 30 s: cut short.
        stop_process(process, timeout=5)
        forget_cluster(address)


@pytest.fixture(scope="module")
def setup(cluster, trained_store, tmp_path_factory):
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


def test_the_ray_application_batches_concurrent_calls_and_answers_a_bad_one_alone(setup, mnist_test):
    """Calls arriving together are answered by one model call (``@serve.batch``), each with its
    own rows; a request the model refuses fails alone, with MLflow's error, and costs no one else."""
    _, stock, ray = setup
    images = mnist_test[0][:16]
    bodies = [json.dumps(digits_body((images[i : i + 1], None), 1)) for i in range(len(images))]
    bad = json.dumps({"dataframe_split": {"columns": ["pixels"], "data": [["1 2 three"]]}})
    expected = httpx.post(f"{stock}/invocations", json=digits_body((images, None), 16), timeout=120).json()
    refused_alone = httpx.post(
        f"{stock}/invocations", content=bad, headers={"Content-Type": "application/json"}, timeout=60
    )

    async def burst() -> list[httpx.Response]:
        headers = {"Content-Type": "application/json", "serve_multiplexed_model_id": "1"}
        async with httpx.AsyncClient(base_url=ray, headers=headers, timeout=120) as client:
            calls = [client.post("/invocations", content=body) for body in [*bodies[:8], bad, *bodies[8:]]]
            return await asyncio.gather(*calls)

    batched = 0
    for _ in range(3):  # a burst is batched unless Ray's 2 ms wait splits it everywhere: retried
        answers = asyncio.run(burst())
        refused = answers.pop(8)
        assert refused.status_code == refused_alone.status_code == 400
        assert refused.json()["error_code"] == refused_alone.json()["error_code"]
        for answer, row in zip(answers, expected["predictions"], strict=True):
            assert answer.status_code == 200, answer.text
            (got,) = answer.json()["predictions"]
            assert got["label"] == row["label"]
            np.testing.assert_allclose(got["probabilities"], row["probabilities"], rtol=1e-5, atol=1e-6)
        batched = max(int(a.headers.get("X-Serve-Batch-Rows", 1)) for a in answers)
        if batched > 1:
            break
    assert batched > 1, "no two concurrent calls were answered by one model call"


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


def gateway_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "mnist_mlops.serve.gateway.cli", "--no_auth", "--engine", "ray", *extra]


def test_a_gateway_joins_a_cluster_started_by_ray_start_with_its_token(cluster, setup, mnist_test, tmp_path):
    """``--ray_address``: the application is deployed on a cluster someone started (``ray start
    --head``, token authentication on), its replicas run in that cluster, and the gateway deletes
    it when it stops, leaving the cluster up. A wrong token and an address where no Ray listens
    each stop the gateway with one line naming the address."""
    address, process, auth = cluster
    gateway, _, _ = setup
    refused = subprocess.Popen(  # about 20 s of Ray's retries: run beside the joining gateway
        gateway_command("--ray_address", address),
        env=subprocess_env(gateway.uri) | auth | {"RAY_AUTH_TOKEN": "not-the-token"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    serve_port = free_port()
    joined = start_gateway(
        gateway.uri,
        tmp_path,
        "--engine",
        "ray",
        "--ray_address",
        address,
        "--ray_http_port",
        str(serve_port),
        environment=auth,
    )
    try:
        answer = ask(joined, digits_body(mnist_test, 2), "someone")
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2, answer.text
        assert {v["backend"] for v in joined.variants().values()} == {f"http://127.0.0.1:{serve_port}"}
        assert replicas(process), "no Serve replica runs in the cluster"
        assert not [p for p in psutil.Process(joined.process.pid).children(recursive=True) if "ray::" in p.name()]
    finally:
        assert joined.stop() == 0
    deadline = time.monotonic() + 60
    while replicas(process):  # the application is deleted; the cluster stays
        assert time.monotonic() < deadline, "the application outlived the gateway"
        time.sleep(0.5)
    assert process.poll() is None
    _, said = refused.communicate(timeout=120)
    assert refused.returncode == 2 and said.count("\n") == 1, said
    assert f"cannot join the Ray cluster at {address}" in said and "RAY_AUTH_TOKEN" in said
    nobody = f"127.0.0.1:{free_port()}"
    result = subprocess.run(gateway_command("--ray_address", nobody), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"cannot reach the Ray cluster at {nobody}" in result.stderr


def forget_cluster(address: str) -> None:
    """Remove the note ``ray start`` leaves of its cluster when stopped by a signal (``ray stop``
    would remove it, but stops every Ray on the machine): the machine as the test found it."""
    note = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    with contextlib.suppress(OSError):
        if note.read_text().strip().endswith(f":{address.rsplit(':', 1)[1]}"):
            note.unlink()


def replicas(cluster: subprocess.Popen) -> list[psutil.Process]:
    """The cluster's Serve replicas of the gateway's application (Ray names its worker processes)."""
    tree = psutil.Process(cluster.pid).children(recursive=True)
    return [p for p in tree if "ServeReplica:mnist-gateway" in " ".join(p.cmdline())]


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def test_a_ray_address_without_the_ray_engine_is_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "mnist_mlops.serve.gateway.cli", "--ray_address", "auto"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--engine ray" in result.stderr
