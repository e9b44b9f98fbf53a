"""The attacks a client with ordinary access would try, against real gateway processes over real
backends and models; each test asserts the defended outcome (``docs/security.md``).

The poisoning run, feedback ownership and request-id overwrite, client errors against the
guardrails, reading the analysis, code in a model version, the champion killed under load, slow
clients, costly images, an inference log that cannot be written, and per-key limits.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import pwd
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from mnist_mlops.registry.history import read as read_history
from tests.e2e.gateway_helpers import PIXELS, samples, start_gateway, store_with, two_version_store
from tests.helpers import PROJECT_ROOT, free_port, subprocess_env

FAST = ["--backend_mode", "warm", "--poll_interval", "1"]


def digit_body(image: np.ndarray) -> dict:
    return {"dataframe_split": {"columns": ["pixels"], "data": [[" ".join(map(str, image.reshape(-1).tolist()))]]}}


async def _score_all(gateway, key: str, images, concurrency: int = 8, **headers: str) -> list[httpx.Response]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(i: int, image) -> httpx.Response:
            async with limit:
                return await client.post(
                    f"{gateway.url}/invocations",
                    json=digit_body(image),
                    headers=gateway.headers(key, **{"X-User-ID": f"user-{i}"}, **headers),
                )

        return await asyncio.gather(*(one(i, image) for i, image in enumerate(images)))


def score_all(gateway, key: str, images, **headers: str) -> list[httpx.Response]:
    return asyncio.run(_score_all(gateway, key, images, **headers))


def feedback(gateway, key: str, request_id: str, label: int) -> httpx.Response:
    body = {"request_id": request_id, "label": int(label)}
    return httpx.post(f"{gateway.url}/feedback", json=body, headers=gateway.headers(key), timeout=30)


def predicted(response: httpx.Response) -> int:
    return response.json()["predictions"][0]["label"]


def test_a_predict_key_cannot_forge_the_ab_evidence_nor_apply_a_decision(
    trained_store, weak_model, mnist_test, tmp_path
):
    """The poisoning run: a client with a predict key labels the worse model's answers "right"
    and the better model's "wrong" (it can tell them apart by checking answers against digits it
    knows, even without ``X-Variant``), tries to label and overwrite another client's records,
    and reads the analysis; nothing it does moves the registry or carries the decision."""
    uri = store_with(trained_store, tmp_path, "tiny", weak_model)
    log = tmp_path / "inference.db"
    gateway = start_gateway(
        uri,
        tmp_path,
        "--split",
        "champion=50,challenger=50",
        "--inference_log",
        str(log),
        "--max_feedback_share",
        "0.5",
        "--min_accuracy",
        "0.3",
        *FAST,
    )
    client = MlflowClient(uri, uri)
    aliases_before = dict(client.get_registered_model("mnist-cnn").aliases)
    history_before = len(read_history(client, "mnist-cnn"))
    images, labels = mnist_test
    honest, attacker = gateway.keys["svc-predict"], gateway.keys["other-client"]
    try:
        honest_answers = score_all(gateway, honest, images[:150])
        assert [
            feedback(gateway, honest, r.headers["X-Request-ID"], y).status_code
            for r, y in zip(honest_answers, labels[:150], strict=True)
        ] == [200] * 150

        attack_answers = score_all(gateway, attacker, images[150:600])
        assert all(r.status_code == 200 for r in attack_answers)
        assert not any("X-Variant" in r.headers or "X-Model-Version" in r.headers for r in attack_answers)
        forged = [
            predicted(r) if predicted(r) != y else (y + 1) % 10  # wrong answers "right", right ones "wrong"
            for r, y in zip(attack_answers, labels[150:600], strict=True)
        ]
        statuses = [
            feedback(gateway, attacker, r.headers["X-Request-ID"], f).status_code
            for r, f in zip(attack_answers, forged, strict=True)
        ]
        assert statuses == [200] * 450  # its own predictions: it may label them

        # Another client's prediction: neither labelled by the attacker nor overwritten by its id.
        (victim,) = score_all(gateway, honest, images[600:601])
        victim_id = victim.headers["X-Request-ID"]
        assert feedback(gateway, attacker, victim_id, 3).status_code == 403
        (reuse,) = score_all(gateway, attacker, images[601:602], **{"X-Request-ID": victim_id})
        assert reuse.headers["X-Request-ID"] != victim_id and reuse.headers["X-Client-Request-ID"] == victim_id
        assert feedback(gateway, honest, victim_id, int(labels[600])).status_code == 200
        again = feedback(gateway, honest, victim_id, int(labels[600]))
        assert again.status_code == 409
        (labelled_by_team,) = score_all(gateway, honest, images[602:603])
        team = feedback(
            gateway, gateway.keys["ground-truth"], labelled_by_team.headers["X-Request-ID"], int(labels[602])
        )
        assert team.status_code == 200  # the labeler role labels any prediction

        # Reading the analysis changes nothing; applying needs an admin key.
        for _ in range(3):
            assert httpx.get(f"{gateway.url}/abtest", headers=gateway.headers(attacker), timeout=60).status_code == 200
        denied = httpx.post(f"{gateway.url}/abtest/apply", headers=gateway.headers(attacker), timeout=60)
        assert denied.status_code == 403 and "admin" in denied.json()["message"]
        applied = httpx.post(f"{gateway.url}/abtest/apply", headers=gateway.headers(gateway.admin_key), timeout=120)
        report = applied.json()
        assert applied.status_code == 200 and report["decision"] != "promote", report
        assert report["largest_key_share"] > 0.5 and report["feedback_keys"] >= 2
        assert any("max_feedback_share" in reason for reason in report["reasons"]), report["reasons"]
        assert dict(client.get_registered_model("mnist-cnn").aliases) == aliases_before
        assert len(read_history(client, "mnist-cnn")) == history_before
    finally:
        assert gateway.stop() == 0
    with sqlite3.connect(log) as db:
        owner = db.execute("SELECT key_name FROM predictions WHERE request_id = ?", (victim_id,)).fetchall()
        label = db.execute("SELECT label, key_name FROM feedback WHERE request_id = ?", (victim_id,)).fetchall()
    assert owner == [("svc-predict",)] and label == [(int(labels[600]), "svc-predict")]


@pytest.fixture(scope="module")
def gateway(trained_store, tmp_path_factory):
    """Champion and challenger (the same model twice) behind a gateway with short edge timeouts."""
    directory = tmp_path_factory.mktemp("attacks")
    uri = two_version_store(trained_store, directory)
    running = start_gateway(
        uri,
        directory,
        "--split",
        "champion=50,challenger=50",
        "--inference_log",
        str(directory / "inference.db"),
        "--header_timeout",
        "2",
        "--body_timeout",
        "2",
        "--keep_alive_timeout",
        "2",
        *FAST,
    )
    yield running
    assert running.stop() == 0


def test_client_errors_are_not_counted_against_the_model(gateway):
    """60 bodies that are no image, spread over users (so both variants get some): each a 400
    naming the problem; no variant's error count moves, so no guardrail can roll it back."""
    before = {alias: v["errors"] for alias, v in gateway.variants().items()}
    bad = {"dataframe_split": {"columns": ["pixels"], "data": [["not pixels at all"]]}}

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{gateway.url}/invocations", json=bad, headers=gateway.headers(**{"X-User-ID": f"u{i}"})
                    )
                    for i in range(60)
                )
            )

    answers = asyncio.run(send())
    assert {r.status_code for r in answers} == {400}
    assert all("stack_trace" not in r.json() and r.json()["message"] for r in answers)
    after = gateway.variants()
    assert {alias: v["errors"] for alias, v in after.items()} == before
    report = httpx.get(f"{gateway.url}/abtest", headers=gateway.headers(), timeout=60).json()
    assert report.get("decision") != "rollback"


def test_the_open_routes_say_ready_or_not_and_nothing_more(gateway):
    ready = httpx.get(f"{gateway.url}/ready", timeout=10)
    health = httpx.get(f"{gateway.url}/health", timeout=10)
    listed = httpx.get(f"{gateway.url}/variants", headers=gateway.headers(), timeout=10).json()["variants"]
    assert ready.json() == {"ready": True} and health.json() == {"status": "alive"}
    assert all(not ({"backend", "pid", "last_error"} & set(v)) for v in listed)
    assert all(v["backend"].startswith("unix:") for v in gateway.variants().values())  # admin: on a socket


def costly_png(side: int) -> str:
    """A PNG of ``side`` x ``side`` white pixels: a few kilobytes to send, ``side``² to decode."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 255).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def test_costly_bodies_are_refused_with_the_limit_named(gateway):
    """A 7000x7000 PNG is 49 million pixels to decode from a small body; JSON nested a thousand
    deep would make the parser recurse."""
    image = {"dataframe_split": {"columns": ["image"], "data": [[costly_png(7000)]]}}
    costly = httpx.post(f"{gateway.url}/invocations", json=image, headers=gateway.headers(), timeout=120)
    deep = httpx.post(
        f"{gateway.url}/invocations",
        content=b'{"inputs": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        headers=gateway.headers(**{"Content-Type": "application/json"}),
        timeout=30,
    )
    fine = httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers(), timeout=30)
    assert costly.status_code == 413, costly.text
    assert "pixels" in costly.json()["message"] and "Traceback" not in costly.text
    assert deep.status_code == 400 and "nests deeper than" in deep.json()["message"]
    assert fine.status_code == 200


def _open(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``; what it sent before closing."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def test_slow_clients_are_cut_off_and_do_not_hold_the_gateway(gateway):
    """Connections that send nothing, headers a byte at a time, or half a body: each is closed
    after its timeout (2 s here), and other clients are answered meanwhile."""
    idle = [_open(gateway.url) for _ in range(20)]
    trickling = _open(gateway.url)
    trickling.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
    half_body = _open(gateway.url)
    body = json.dumps(PIXELS).encode()
    half_body.sendall(
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {gateway.predict_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:20]
    )
    started = time.monotonic()
    answered = [
        httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers(), timeout=10) for _ in range(5)
    ]
    assert all(r.status_code == 200 for r in answered)
    for _ in range(3):  # the trickle goes on, one header line at a time
        time.sleep(0.5)
        trickling.sendall(b"X-Slow: 1\r\n")
    closed, _ = _closed_within(trickling, 8)
    assert closed and time.monotonic() - started < 10
    closed, answer = _closed_within(half_body, 8)
    assert closed and b" 408 " in answer.split(b"\r\n", 1)[0] and b"body" in answer
    assert all(_closed_within(sock, 8)[0] for sock in idle)
    for sock in (*idle, trickling, half_body):
        sock.close()


def test_a_key_over_its_rate_gets_429_and_others_are_not_slowed(gateway):
    throttled = gateway.keys["throttled"]  # 3 a minute (tests/e2e/gateway_helpers.KEYS)
    answers = [
        httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers(throttled)) for _ in range(5)
    ]
    others = httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers())
    assert [r.status_code for r in answers[:3]] == [200, 200, 200]
    assert {r.status_code for r in answers[3:]} == {429}
    assert int(answers[3].headers["Retry-After"]) >= 1 and "per minute" in answers[3].json()["message"]
    assert others.status_code == 200


def test_a_key_past_its_daily_image_quota_gets_429_and_is_charged_only_what_was_served(gateway):
    metered = gateway.keys["metered"]  # five images a day (tests/e2e/gateway_helpers.KEYS)
    two = {"dataframe_split": {"columns": ["pixels"], "data": PIXELS["dataframe_split"]["data"] * 2}}

    def send(body: dict) -> httpx.Response:
        return httpx.post(f"{gateway.url}/invocations", json=body, headers=gateway.headers(metered), timeout=60)

    assert [send(two).status_code, send(two).status_code] == [200, 200]
    refused = send(two)  # would make six: refused whole, nothing charged
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "1 of its 5 images" in refused.json()["message"]
    assert send(PIXELS).status_code == 200  # the one image left is still there
    assert send(PIXELS).status_code == 429
    assert httpx.post(f"{gateway.url}/invocations", json=two, headers=gateway.headers()).status_code == 200


def test_the_champion_killed_under_load_keeps_its_traffic_and_is_back_in_seconds(trained_store, tmp_path):
    """SIGKILL to the champion's backend while 8 clients send: its requests wait for the
    restarted backend (or are retried once); none goes to the challenger beyond its 10% share."""
    uri = two_version_store(trained_store, tmp_path)
    gateway = start_gateway(uri, tmp_path, "--split", "champion=90,challenger=10", "--expose_variant", *FAST)
    try:
        champion = gateway.variants()["champion"]

        async def load() -> list[httpx.Response]:
            answers: list[httpx.Response] = []
            killed_at = None
            async with httpx.AsyncClient(timeout=60) as client:

                async def worker(w: int) -> None:
                    nonlocal killed_at
                    for i in range(10_000):
                        headers = gateway.headers(**{"X-User-ID": f"w{w}-{i}"})
                        answers.append(await client.post(f"{gateway.url}/invocations", json=PIXELS, headers=headers))
                        if killed_at and time.monotonic() - killed_at > 5:
                            return

                async def killer() -> None:
                    nonlocal killed_at
                    await asyncio.sleep(1.0)
                    os.kill(champion["pid"], signal.SIGKILL)
                    killed_at = time.monotonic()

                await asyncio.gather(killer(), *(worker(w) for w in range(8)))
            return answers

        answers = asyncio.run(load())
        after = gateway.variants()["champion"]
    finally:
        assert gateway.stop() == 0
    failed = [r.status_code for r in answers if r.status_code != 200]
    served = [r.headers["X-Variant"] for r in answers if r.status_code == 200]
    share = served.count("challenger") / len(served)
    print(
        f"champion killed under load: {len(answers)} requests, {len(failed)} failed {failed[:5]}, "
        f"challenger share {share:.3f}"
    )
    assert after["pid"] != champion["pid"] and after["state"] == "ready" and after["restarts"] >= 1
    assert share < 0.10 + 4 * (0.09 / len(served)) ** 0.5  # its share, plus four standard deviations
    assert failed == [], f"{len(failed)} of {len(answers)} failed"


def test_an_inference_log_that_cannot_be_written_does_not_stop_serving(trained_store, tmp_path):
    """Another process holds the log's database locked (as a stuck backup or a full disk would
    stop writes): requests are answered, feedback gets 503 at once, /metrics shows the backlog;
    once the lock goes the backlog is written; SIGTERM while it is held ends within seconds."""
    uri = two_version_store(trained_store, tmp_path)
    log = tmp_path / "inference.db"
    gateway = start_gateway(uri, tmp_path, "--split", "champion=100", "--inference_log", str(log), *FAST)
    locker = sqlite3.connect(log, isolation_level=None, timeout=1)
    try:
        first = httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers(), timeout=30)
        time.sleep(1.0)  # written before the lock
        locker.execute("BEGIN EXCLUSIVE")
        answers = [
            httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers(), timeout=30)
            for _ in range(20)
        ]
        assert all(r.status_code == 200 for r in answers)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            late = feedback(gateway, gateway.predict_key, first.headers["X-Request-ID"], 1)
            if late.status_code == 503:
                break
            time.sleep(0.5)
        assert late.status_code == 503 and "inference log" in late.json()["message"]
        metrics = httpx.get(f"{gateway.url}/metrics", headers=gateway.headers(), timeout=10).text
        assert samples(metrics, "gateway_inference_log_failing")[0].value == 1
        assert samples(metrics, "gateway_inference_log_backlog")[0].value >= 20
        locker.execute("COMMIT")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metrics = httpx.get(f"{gateway.url}/metrics", headers=gateway.headers(), timeout=10).text
            if samples(metrics, "gateway_inference_log_backlog")[0].value == 0:
                break
            time.sleep(0.5)
        assert samples(metrics, "gateway_inference_log_backlog")[0].value == 0
        assert samples(metrics, "gateway_inference_log_lost_rows")[0].value == 0
        assert feedback(gateway, gateway.predict_key, first.headers["X-Request-ID"], 1).status_code == 200
        with sqlite3.connect(log) as db:
            assert db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 21

        locker.execute("BEGIN EXCLUSIVE")
        httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers(), timeout=30)
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        gateway.process.wait(timeout=30)
        stopped_in = time.monotonic() - started
    finally:
        locker.close()
        gateway.stop()
    assert stopped_in < 15, f"SIGTERM took {stopped_in:.1f} s"
    assert "lost" in gateway.log.read_text()  # the row it could not write is named as lost


def _nobody_can_run_this_interpreter() -> bool:
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import mnist_mlops.serve.backend"], user="nobody", capture_output=True, timeout=60
        )
    except OSError:
        return False
    return probe.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only a gateway running as root switches the backends' user")
def test_model_code_does_not_run_as_root_and_gets_no_credentials(trained_store, tmp_path):
    """A version whose code writes a marker when it loads. By default (the gateway is root) its
    backend runs as ``nobody``: where ``nobody`` cannot run this installation (a Python under a
    0700 home), the gateway refuses to start with one line instead; where it can, the marker
    shows the backend's user. Either way, as root on request, the code sees no credentials."""
    uri = trained_store.copy_to(tmp_path)
    markers = tmp_path / "markers"
    markers.mkdir()
    markers.chmod(0o777)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PROJECT_ROOT / "tests/assets/marker-model/model.py"),
            model_config={"marker": str(markers / "loaded.json")},
        )
    (markers / "loaded.json").unlink(missing_ok=True)  # MLflow loaded it once to check it as it logged it
    client = MlflowClient(uri, uri)
    version = client.create_model_version("mnist-cnn", info.model_uri, info.run_id).version
    client.set_registered_model_alias("mnist-cnn", "champion", version)
    secrets = {"MLFLOW_TRACKING_PASSWORD": "s3cret", "AWS_SECRET_ACCESS_KEY": "s3cret"}

    if _nobody_can_run_this_interpreter():
        (tmp_path / "as-nobody").mkdir()
        gateway = start_gateway(uri, tmp_path / "as-nobody", "--backend_user", "nobody", *FAST)
        gateway.stop()
        seen = json.loads((markers / "loaded.json").read_text())
        assert seen["uid"] == pwd.getpwnam("nobody").pw_uid
    else:
        for mode in ("mlflow", "warm"):  # warm: mnist-gateway starts its pool before this check
            command = [sys.executable, "-m", "mnist_mlops.serve.gateway", "--no_auth", "--port", str(free_port())]
            refused = subprocess.run(
                [*command, "--backend_mode", mode],
                env=subprocess_env(uri),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            lines = refused.stderr.strip().splitlines()
            assert refused.returncode != 0 and len(lines) == 1, refused.stderr
            assert "'nobody'" in lines[0] and "--backend_user" in lines[0] and "Traceback" not in refused.stderr
            assert not (markers / "loaded.json").exists()

    (tmp_path / "as-root").mkdir()
    gateway = start_gateway(uri, tmp_path / "as-root", *FAST, environment=secrets)  # root: start_gateway's default
    try:
        answer = httpx.post(f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers(), timeout=30)
    finally:
        gateway.stop()
    seen = json.loads((markers / "loaded.json").read_text())
    assert answer.status_code == 200
    assert not set(secrets) & set(seen["environment"])
    assert not any(name.startswith(("MLFLOW_TRACKING_", "AWS_")) for name in seen["environment"])
    assert seen["home"] != os.environ.get("HOME")


class _Pickled(mlflow.pyfunc.PythonModel):
    """A model that reaches the registry as a pickle: its code would run as it is unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        with open(self.marker, "w") as f:
            f.write("unpickled")

    def predict(self, context, model_input, params=None):
        return [0] * len(model_input)


def test_a_pickled_model_version_is_refused_and_takes_no_traffic(trained_store, mnist_test, tmp_path):
    """Pickles are off in the backends: the version is refused as it loads (nothing unpickled, no
    marker), the challenger takes no traffic, and admins see why in /variants."""
    uri = trained_store.copy_to(tmp_path)
    marker = tmp_path / "unpickled"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=_Pickled(str(marker)))
    marker.unlink(missing_ok=True)  # MLflow loaded it once to check it as it logged it
    client = MlflowClient(uri, uri)
    version = client.create_model_version("mnist-cnn", info.model_uri, info.run_id).version
    client.set_registered_model_alias("mnist-cnn", "challenger", version)
    gateway = start_gateway(uri, tmp_path, "--split", "champion=50,challenger=50", "--expose_variant", *FAST)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not gateway.variants()["challenger"]["last_error"]:
            time.sleep(0.5)
        challenger = gateway.variants()["challenger"]
        answers = score_all(gateway, gateway.predict_key, mnist_test[0][:40])
    finally:
        gateway.stop()
    assert challenger["state"] != "ready" and "pickle" in challenger["last_error"].lower(), challenger
    assert not marker.exists()
    assert all(r.status_code == 200 for r in answers)
    assert {r.headers["X-Variant"] for r in answers} == {"champion"}
