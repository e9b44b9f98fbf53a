"""The A/B gateway as a user runs it: a real ``mnist-gateway`` process over real ``mlflow models
serve`` backends of two real versions, with API keys. What needs the processes themselves: a
request end to end, following the registry under load, a backend killed, TLS. (The data plane's
behaviour is tested in-process, in ``tests/gateway``.)"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import ssl
import time

import httpx
import pytest
from mlflow import MlflowClient

from mnist_mlops.registry.history import read as read_history
from tests.e2e.gateway_helpers import PIXELS, model_location, samples, start_gateway, two_version_store


@pytest.fixture(scope="module")
def gateway(trained_store, tmp_path_factory):
    directory = tmp_path_factory.mktemp("gateway")
    uri = two_version_store(trained_store, directory)
    running = start_gateway(
        uri, directory, "--split", "champion=70,challenger=30", "--poll_interval", "1", "--expose_variant"
    )
    yield running
    assert running.stop() == 0


async def _fire(gateway, count: int, concurrency: int, user=lambda i: None, body=PIXELS) -> list[httpx.Response]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(i: int) -> httpx.Response:
            headers = gateway.headers(**({"X-User-ID": user(i)} if user(i) else {}))
            async with limit:
                return await client.post(f"{gateway.url}/invocations", json=body, headers=headers)

        return await asyncio.gather(*(one(i) for i in range(count)))


def fire(gateway, count: int, concurrency: int = 16, **kwargs) -> list[httpx.Response]:
    return asyncio.run(_fire(gateway, count, concurrency, **kwargs))


def test_a_scoring_request_is_answered_with_the_variant_version_and_request_id(gateway):
    response = httpx.post(
        f"{gateway.url}/invocations",
        json=PIXELS,
        headers=gateway.headers(**{"X-Request-ID": "client-id-42"}),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] != "client-id-42"  # the gateway's own id
    assert response.headers["X-Client-Request-ID"] == "client-id-42"
    assert response.headers["X-Variant"] in ("champion", "challenger")
    assert response.headers["X-Model-Version"] in ("1", "2")
    (prediction,) = response.json()["predictions"]  # MLflow's protocol, unchanged
    assert set(prediction) == {"label", "confidence", "probabilities", "uncertain"}


def test_an_alias_moved_in_the_registry_under_load_switches_traffic_without_a_failed_request(gateway):
    client = MlflowClient(gateway.uri, gateway.uri)
    v3 = str(client.create_model_version("mnist-cnn", model_location(client)).version)

    async def load_until_switched() -> tuple[list[httpx.Response], float]:
        responses: list[httpx.Response] = []
        moved_at = time.monotonic()
        client.set_registered_model_alias("mnist-cnn", "challenger", v3)  # what the UI's alias editor does
        switched_after = None
        async with httpx.AsyncClient(timeout=60) as http:
            while time.monotonic() - moved_at < 120:
                batch = await asyncio.gather(
                    *(
                        http.post(
                            f"{gateway.url}/invocations",
                            json=PIXELS,
                            headers=gateway.headers(**{"X-User-ID": f"load-{i}"}),
                        )
                        for i in range(8)
                    )
                )
                responses += batch
                if switched_after is None and any(r.headers.get("X-Model-Version") == v3 for r in batch):
                    switched_after = time.monotonic() - moved_at
                if switched_after is not None and time.monotonic() - moved_at > switched_after + 3:
                    break
        return responses, switched_after

    responses, switched_after = asyncio.run(load_until_switched())
    assert [r.status_code for r in responses if r.status_code != 200] == []
    assert switched_after is not None and switched_after < 90
    assert gateway.variants()["challenger"]["version"] == v3
    old_backend_gone_in = 30
    deadline = time.monotonic() + old_backend_gone_in
    while "stopped backend for v2" not in gateway.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "stopped backend for v2" in gateway.log.read_text()


def test_a_killed_backend_hands_its_share_to_the_champion_and_is_restarted(gateway):
    challenger = gateway.variants()["challenger"]
    os.killpg(challenger["pid"], signal.SIGKILL)
    responses = fire(gateway, 60, concurrency=4, user=lambda i: f"user-{i}")
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = gateway.variants()["challenger"]
        if state["state"] == "ready" and state["pid"] != challenger["pid"]:
            break
        time.sleep(0.5)
    assert state["state"] == "ready" and state["restarts"] >= 1
    assert any(r.headers["X-Variant"] == "challenger" for r in fire(gateway, 60, user=lambda i: f"user-{i}"))


def make_certificate(directory) -> tuple:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_with_a_self_signed_certificate(gateway, tmp_path):
    cert, key = make_certificate(tmp_path)
    champion_url = gateway.variants()["champion"]["backend"]
    trusted = ssl.create_default_context(cafile=str(cert))
    tls = start_gateway(
        gateway.uri,
        tmp_path,
        "--certfile",
        str(cert),
        "--keyfile",
        str(key),
        "--backend",
        f"champion={champion_url}",
        "--expose_variant",
        scheme="https",
        verify=trusted,
    )
    try:
        response = httpx.post(f"{tls.url}/invocations", json=PIXELS, headers=tls.headers(), verify=trusted)
        assert response.status_code == 200 and response.headers["X-Variant"] == "champion"
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{tls.url}/invocations", json=PIXELS, headers=tls.headers(), verify=True)
    finally:
        assert tls.stop() == 0


def test_an_alias_moved_to_a_worse_version_is_not_served(gateway, weak_model):
    """The gate on follow: the alias editor moves ``challenger`` to a clearly worse version (what
    anyone with EDIT on the model may do); the gateway scores it through its own backend, keeps
    serving the version it had, and says why in /variants, /metrics and the history."""
    client = MlflowClient(gateway.uri, gateway.uri)
    serving = gateway.variants()["challenger"]["version"]
    weak = str(client.create_model_version("mnist-cnn", weak_model.source).version)
    client.set_registered_model_alias("mnist-cnn", "challenger", weak)
    deadline = time.monotonic() + 120
    while "refused by the gate" not in (gateway.variants()["challenger"]["last_error"] or ""):
        assert time.monotonic() < deadline, gateway.variants()["challenger"]
        time.sleep(0.5)
    challenger = gateway.variants()["challenger"]
    assert challenger["version"] == serving and challenger["state"] == "ready"
    assert f"v{weak} scored" in challenger["last_error"]
    answers = fire(gateway, 60, user=lambda i: f"gated-{i}")
    assert all(r.status_code == 200 for r in answers)
    assert {r.headers["X-Model-Version"] for r in answers if r.headers["X-Variant"] == "challenger"} == {serving}
    metrics = httpx.get(f"{gateway.url}/metrics", headers=gateway.headers(), timeout=10).text
    assert samples(metrics, "gateway_follow_gate_refusals_total", variant="challenger")[0].value == 1
    deadline = time.monotonic() + 30
    while not any(e.action == "follow-refused" for e in read_history(client, "mnist-cnn")):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    event = [e for e in read_history(client, "mnist-cnn") if e.action == "follow-refused"][-1]
    assert (event.alias, event.to_version) == ("challenger", weak) and f"serving v{serving}" in event.reason
    assert event.figures["candidate_accuracy"] < event.figures["current_accuracy"]
