"""The A/B gateway as a user runs it: a real ``mnist-gateway`` process over real ``mlflow models
serve`` backends of two real versions, with API keys."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import socket
import ssl
import time

import httpx
import pytest
from mlflow import MlflowClient

from tests.e2e.gateway_helpers import PIXELS, model_location, start_gateway, two_version_store


@pytest.fixture(scope="module")
def gateway(trained_store, tmp_path_factory):
    directory = tmp_path_factory.mktemp("gateway")
    uri = two_version_store(trained_store, directory)
    running = start_gateway(uri, directory, "--split", "champion=70,challenger=30", "--poll_interval", "1")
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
    assert response.headers["X-Request-ID"] == "client-id-42"
    assert response.headers["X-Variant"] in ("champion", "challenger")
    assert response.headers["X-Model-Version"] in ("1", "2")
    (prediction,) = response.json()["predictions"]  # MLflow's protocol, unchanged
    assert set(prediction) == {"label", "confidence", "probabilities"}


def test_traffic_splits_by_weight_without_a_user_key(gateway):
    responses = fire(gateway, 2000)
    assert all(r.status_code == 200 for r in responses)
    share = sum(r.headers["X-Variant"] == "challenger" for r in responses) / len(responses)
    assert share == pytest.approx(0.30, abs=0.04)  # 4+ standard deviations of a 2000-draw binomial


def test_a_user_key_always_lands_on_the_same_variant(gateway):
    responses = fire(gateway, 600, user=lambda i: f"user-{i % 200}")
    seen: dict[str, set[str]] = {}
    for i, response in enumerate(responses):
        seen.setdefault(f"user-{i % 200}", set()).add(response.headers["X-Variant"])
    assert all(len(variants) == 1 for variants in seen.values())
    share = sum(v == {"challenger"} for v in seen.values()) / len(seen)
    assert 0.15 < share < 0.45


def test_changing_a_weight_moves_only_the_users_it_must(gateway):
    users = lambda i: f"mover-{i}"  # noqa: E731
    before = [r.headers["X-Variant"] for r in fire(gateway, 300, user=users)]
    put = httpx.put(
        f"{gateway.url}/admin/split",
        json={"champion": 50, "challenger": 50},
        headers=gateway.headers(gateway.admin_key),
        timeout=10,
    )
    assert put.status_code == 200 and put.json()["split"] == {"champion": 50.0, "challenger": 50.0}
    try:
        after = [r.headers["X-Variant"] for r in fire(gateway, 300, user=users)]
    finally:
        httpx.put(
            f"{gateway.url}/admin/split",
            json={"champion": 70, "challenger": 30},
            headers=gateway.headers(gateway.admin_key),
            timeout=10,
        )
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert moved and all(pair == ("champion", "challenger") for pair in moved)


def test_api_keys_are_required_and_roles_enforced(gateway):
    url = f"{gateway.url}/invocations"
    no_key = httpx.post(url, json=PIXELS, timeout=10)
    assert no_key.status_code == 401 and no_key.json()["error_code"] == "UNAUTHENTICATED"
    bad_key = httpx.post(url, json=PIXELS, headers={"Authorization": "Bearer not-a-key"}, timeout=10)
    assert bad_key.status_code == 401
    via_x_api_key = httpx.post(url, json=PIXELS, headers={"X-API-Key": gateway.predict_key}, timeout=10)
    assert via_x_api_key.status_code == 200
    wrong_role = httpx.put(f"{gateway.url}/admin/split", json={"champion": 1}, headers=gateway.headers(), timeout=10)
    assert wrong_role.status_code == 403 and "admin" in wrong_role.json()["message"]
    assert gateway.predict_key not in gateway.log.read_text() and gateway.admin_key not in gateway.log.read_text()


def test_a_bad_split_is_refused_and_nothing_changes(gateway):
    for body in ({"champion": -1}, {"champion": "lots"}, ["champion"], {}):
        response = httpx.put(f"{gateway.url}/admin/split", json=body, headers=gateway.headers(gateway.admin_key))
        assert response.status_code == 400 and "invalid split" in response.json()["message"]
    assert {a: v["weight"] for a, v in gateway.variants().items()} == {"champion": 70.0, "challenger": 30.0}


def test_a_body_over_the_limit_gets_413_before_it_is_read(gateway):
    body = b'{"dataframe_split": {"columns": ["image"], "data": [["' + b"A" * (50 * 1024 * 1024) + b'"]]}}'
    response = httpx.post(
        f"{gateway.url}/invocations",
        content=body,
        headers=gateway.headers(**{"Content-Type": "application/json"}),
        timeout=60,
    )
    assert response.status_code == 413 and "at most 10,485,760 accepted" in response.json()["message"]


def test_a_client_that_leaves_halfway_through_its_body_is_logged_and_nothing_else_happens(gateway):
    host, port = gateway.url.removeprefix("http://").split(":")
    key = gateway.headers()["Authorization"]
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nX-Request-ID: left-halfway\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"dataframe_split": ' % key.encode()
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "left-halfway" not in gateway.log.read_text():
        time.sleep(0.2)
    line = next(x for x in gateway.log.read_text().splitlines() if "left-halfway" in x)
    assert '"status": 499' in line  # logged as the client's doing, not as a gateway failure
    assert "Traceback" not in gateway.log.read_text()
    assert fire(gateway, 1)[0].status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (
            b'{"dataframe_split": {"columns": ["pixels"], "data": [[[1, 2, 3]]]}}',
            "application/json",
            "expected 784",
        ),
        (b"not json at all", "application/json", "Invalid input"),
        (b'pixels\n"1 2\nbroken', "text/csv", ""),
    ],
)
def test_a_malformed_body_comes_back_as_the_backends_400_without_a_stack_trace(gateway, body, content_type, expected):
    response = httpx.post(
        f"{gateway.url}/invocations",
        content=body,
        headers=gateway.headers(**{"Content-Type": content_type}),
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert expected in response.json()["message"]
    assert "stack_trace" not in response.json() and "Traceback" not in response.text
    assert response.headers["X-Variant"] in ("champion", "challenger")


def test_every_refusal_is_a_json_error_even_where_the_backend_answers_in_plain_text(gateway):
    """MLflow answers an unsupported content type with a plain-text 415; the gateway relays the
    status with the text inside its JSON error. Its own 404 and 405 take the same shape."""
    unsupported = httpx.post(
        f"{gateway.url}/invocations",
        content=b"<digit/>",
        headers=gateway.headers(**{"Content-Type": "application/xml"}),
        timeout=30,
    )
    assert unsupported.status_code == 415
    assert unsupported.headers["content-type"] == "application/json"
    assert unsupported.json()["error_code"] == "BAD_REQUEST"
    assert "application/json" in unsupported.json()["message"] and "application/xml" in unsupported.json()["message"]
    wrong_method = httpx.get(f"{gateway.url}/invocations", headers=gateway.headers(), timeout=30)
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
    assert wrong_method.json()["error_code"] == "METHOD_NOT_ALLOWED" and "POST" in wrong_method.json()["message"]
    unknown = httpx.get(f"{gateway.url}/predict", timeout=30)
    assert unknown.status_code == 404
    assert unknown.json() == {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Not Found: GET /predict"}
    wrong_route_method = httpx.post(f"{gateway.url}/variants", headers=gateway.headers(), timeout=30)
    assert wrong_route_method.status_code == 405 and wrong_route_method.headers["allow"] == "GET"
    assert wrong_route_method.json()["error_code"] == "METHOD_NOT_ALLOWED"


def test_observability_endpoints(gateway):
    assert httpx.get(f"{gateway.url}/health").json() == {"status": "alive"}
    assert httpx.get(f"{gateway.url}/ready").status_code == 200
    assert httpx.get(f"{gateway.url}/metrics").status_code == 401
    metrics = httpx.get(f"{gateway.url}/metrics", headers=gateway.headers()).text
    assert 'gateway_requests_total{status="200",variant="champion",version="1"}' in metrics
    assert "gateway_request_seconds_bucket" in metrics
    variants = gateway.variants()
    assert variants["champion"]["version"] == "1" and variants["challenger"]["state"] == "ready"
    assert variants["champion"]["requests"] > 0
    access = [line for line in gateway.log.read_text().splitlines() if "mnist.gateway.access" in line]
    assert '"key": "svc-predict"' in access[-1] and '"ms":' in access[-1]


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
