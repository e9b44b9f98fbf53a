"""The gateway's data plane in-process, over two real backends: routing by weight and by user,
keys and roles, limits, refusals in MLflow's error shape, and what it tells about itself."""

from __future__ import annotations

import json

import pytest

from tests.gateway.harness import PIXELS, in_process, settings, until

pytestmark = pytest.mark.anyio


def split_settings(backends, tmp_path, split=None, **overrides):
    """Two variants; clients told which answered (``expose_variant``), so routing can be read."""
    overrides.setdefault("expose_variant", True)
    return settings(
        backends.store_uri,
        tmp_path,
        backends.keys,
        split=split or {"champion": 70.0, "challenger": 30.0},
        backend_urls=backends.urls,
        **overrides,
    )


async def test_a_scoring_request_is_answered_with_the_variant_version_and_request_id(backends, tmp_path):
    async with in_process(split_settings(backends, tmp_path), backends.keys) as gw:
        response = await gw.score(PIXELS, **{"X-Request-ID": "client-id-42"})
    assert response.status_code == 200, response.text
    # The id is the gateway's own; the client's is kept beside it, never in its place.
    assert response.headers["X-Request-ID"] != "client-id-42" and len(response.headers["X-Request-ID"]) == 32
    assert response.headers["X-Client-Request-ID"] == "client-id-42"
    assert (response.headers["X-Variant"], response.headers["X-Model-Version"]) in {
        ("champion", "1"),
        ("challenger", "2"),
    }
    (prediction,) = response.json()["predictions"]  # MLflow's protocol, unchanged
    assert set(prediction) == {"label", "confidence", "probabilities", "uncertain"}


async def test_only_admin_keys_or_expose_variant_learn_which_variant_answered(backends, tmp_path):
    """A client who knew which model answered could label one arm wrong and the other right."""
    async with in_process(split_settings(backends, tmp_path, expose_variant=False), backends.keys) as gw:
        client = await gw.fire(40, user=lambda i: f"user-{i}")
        admin = await gw.score(PIXELS, key=backends.keys.admin)
        listed = (await gw.client.get("/variants", headers=gw.headers())).json()["variants"]
        detailed = (await gw.client.get("/variants", headers=gw.headers(backends.keys.admin))).json()["variants"]
    assert all(r.status_code == 200 and "X-Variant" not in r.headers for r in client)
    assert not any("X-Model-Version" in r.headers for r in client)
    assert admin.headers["X-Variant"] in {"champion", "challenger"}
    assert all("backend" not in v and "pid" not in v and "last_error" not in v for v in listed)
    assert all(v["backend"].startswith("http") for v in detailed)


async def test_traffic_splits_by_weight_without_a_user_key(backends, tmp_path):
    async with in_process(split_settings(backends, tmp_path), backends.keys) as gw:
        responses = await gw.fire(2000)
    assert all(r.status_code == 200 for r in responses)
    share = sum(r.headers["X-Variant"] == "challenger" for r in responses) / len(responses)
    assert share == pytest.approx(0.30, abs=0.04)  # 4+ standard deviations of a 2000-draw binomial


async def test_a_user_key_always_lands_on_the_same_variant(backends, tmp_path):
    async with in_process(split_settings(backends, tmp_path), backends.keys) as gw:
        responses = await gw.fire(600, user=lambda i: f"user-{i % 200}")
    seen: dict[str, set[str]] = {}
    for i, response in enumerate(responses):
        seen.setdefault(f"user-{i % 200}", set()).add(response.headers["X-Variant"])
    assert all(len(variants) == 1 for variants in seen.values())
    assert 0.15 < sum(v == {"challenger"} for v in seen.values()) / len(seen) < 0.45


async def test_changing_a_weight_moves_only_the_users_it_must(backends, tmp_path):
    users = lambda i: f"mover-{i}"  # noqa: E731
    async with in_process(split_settings(backends, tmp_path), backends.keys) as gw:
        before = [r.headers["X-Variant"] for r in await gw.fire(300, user=users)]
        put = await gw.client.put(
            "/admin/split", json={"champion": 50, "challenger": 50}, headers=gw.headers(backends.keys.admin)
        )
        assert put.status_code == 200 and put.json()["split"] == {"champion": 50.0, "challenger": 50.0}
        after = [r.headers["X-Variant"] for r in await gw.fire(300, user=users)]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert moved and all(pair == ("champion", "challenger") for pair in moved)


async def test_api_keys_are_required_and_roles_enforced(backends, tmp_path, caplog):
    async with in_process(split_settings(backends, tmp_path), backends.keys) as gw:
        no_key = await gw.client.post("/invocations", json=PIXELS)
        bad_key = await gw.client.post("/invocations", json=PIXELS, headers={"Authorization": "Bearer not-a-key"})
        via_x_api_key = await gw.client.post("/invocations", json=PIXELS, headers={"X-API-Key": backends.keys.predict})
        wrong_role = await gw.client.put("/admin/split", json={"champion": 1}, headers=gw.headers())
        metrics_without_key = await gw.client.get("/metrics")
    assert no_key.status_code == 401 and no_key.json()["error_code"] == "UNAUTHENTICATED"
    assert no_key.headers["WWW-Authenticate"] == "Bearer"
    assert bad_key.status_code == 401 and via_x_api_key.status_code == 200
    assert wrong_role.status_code == 403 and "admin" in wrong_role.json()["message"]
    assert metrics_without_key.status_code == 401
    assert backends.keys.predict not in caplog.text and backends.keys.admin not in caplog.text


async def test_a_bad_split_is_refused_and_nothing_changes(backends, tmp_path):
    async with in_process(split_settings(backends, tmp_path), backends.keys) as gw:
        for body in ({"champion": -1}, {"champion": "lots"}, ["champion"], {}):
            response = await gw.client.put("/admin/split", json=body, headers=gw.headers(backends.keys.admin))
            assert response.status_code == 400 and "invalid split" in response.json()["message"]
        assert {a: v["weight"] for a, v in gw.variants().items()} == {"champion": 70.0, "challenger": 30.0}


async def test_a_body_over_the_limit_gets_413_before_it_is_read(backends, tmp_path):
    """Refused on its declared length, and a body that lies about it (or is chunked) once the
    limit is passed: the rest is never read."""
    limit = 1024 * 1024
    async with in_process(split_settings(backends, tmp_path, max_body_bytes=limit), backends.keys) as gw:
        declared = await gw.client.post(
            "/invocations",
            content=b"x" * (limit + 1),
            headers=gw.headers(**{"Content-Type": "application/json"}),
        )
        sent = []

        async def chunks():
            for _ in range(64):
                sent.append(64 * 1024)
                yield b"A" * (64 * 1024)

        chunked = await gw.client.post("/invocations", content=chunks(), headers=gw.headers())
    assert declared.status_code == 413 and "at most 1,048,576 accepted" in declared.json()["message"]
    assert chunked.status_code == 413 and "exceeds 1,048,576 bytes" in chunked.json()["message"]
    assert sum(sent) <= limit + 128 * 1024  # stopped reading right after the limit


async def test_a_client_that_leaves_halfway_through_its_body_is_logged_as_499(backends, tmp_path, caplog):
    """Driven at the ASGI level: the body's first part, then the client's disconnect."""
    async with in_process(split_settings(backends, tmp_path), backends.keys) as gw:
        app = gw.client._transport.app
        messages = iter(
            [
                {"type": "http.request", "body": b'{"dataframe_split": ', "more_body": True},
                {"type": "http.disconnect"},
            ]
        )
        sent = []

        async def receive():
            return next(messages)

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/invocations",
            "headers": [(b"authorization", f"Bearer {backends.keys.predict}".encode()), (b"x-request-id", b"left")],
        }
        caplog.set_level("INFO", logger="mnist.gateway.access")
        await app(scope, receive, send)
        assert sent == []  # nobody to answer
        assert (await gw.score()).status_code == 200
    line = next(r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg["client_request_id"] == "left")
    assert line["status"] == 499  # logged as the client's doing, not as a gateway failure


@pytest.mark.parametrize(
    ("body", "content_type", "expected", "routed"),
    [
        (
            b'{"dataframe_split": {"columns": ["pixels"], "data": [[[1, 2, 3]]]}}',
            "application/json",
            "expected 784",
            True,
        ),
        (b"not json at all", "application/json", "not valid JSON", False),
        (b'pixels\n"1 2\nbroken', "text/csv", "", True),
    ],
)
async def test_a_malformed_body_gets_a_400_without_a_stack_trace(
    backends, tmp_path, body, content_type, expected, routed
):
    """The backend's own 400 for what only the model can judge; the gateway's own for a body that
    is not JSON at all (it parses each request once, before routing it)."""
    async with in_process(split_settings(backends, tmp_path), backends.keys) as gw:
        response = await gw.client.post(
            "/invocations", content=body, headers=gw.headers(**{"Content-Type": content_type})
        )
    assert response.status_code == 400, response.text
    assert expected in response.json()["message"]
    assert "stack_trace" not in response.json() and "Traceback" not in response.text
    assert ("X-Variant" in response.headers) == routed


async def test_every_refusal_is_a_json_error_even_where_the_backend_answers_in_plain_text(backends, tmp_path):
    """MLflow answers an unsupported content type with a plain-text 415; the gateway relays the
    status with the text inside its JSON error. Its own 404 and 405 take the same shape."""
    async with in_process(split_settings(backends, tmp_path), backends.keys) as gw:
        unsupported = await gw.client.post(
            "/invocations", content=b"<digit/>", headers=gw.headers(**{"Content-Type": "application/xml"})
        )
        wrong_method = await gw.client.get("/invocations", headers=gw.headers())
        unknown = await gw.client.get("/predict")
        wrong_route_method = await gw.client.post("/variants", headers=gw.headers())
    assert unsupported.status_code == 415 and unsupported.headers["content-type"] == "application/json"
    assert unsupported.json()["error_code"] == "BAD_REQUEST"
    assert "application/json" in unsupported.json()["message"] and "application/xml" in unsupported.json()["message"]
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
    assert wrong_method.json()["error_code"] == "METHOD_NOT_ALLOWED" and "POST" in wrong_method.json()["message"]
    assert unknown.status_code == 404
    assert unknown.json() == {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Not Found: GET /predict"}
    assert wrong_route_method.status_code == 405 and wrong_route_method.headers["allow"] == "GET"
    assert wrong_route_method.json()["error_code"] == "METHOD_NOT_ALLOWED"


async def test_observability_endpoints(backends, tmp_path, caplog):
    caplog.set_level("INFO", logger="mnist.gateway.access")
    async with in_process(split_settings(backends, tmp_path), backends.keys) as gw:
        await gw.fire(20)
        health = await gw.client.get("/health")
        ready = await gw.client.get("/ready")
        served = await gw.metric("gateway_requests_total", variant="champion", version="1", status="200")
        latency = await gw.metric("gateway_request_seconds_count", variant="champion")
        variants = gw.variants()
    assert health.json() == {"status": "alive"} and ready.status_code == 200
    assert served > 0 and latency == served
    assert variants["champion"]["version"] == "1" and variants["challenger"]["state"] == "ready"
    assert variants["champion"]["requests"] + variants["challenger"]["requests"] == 20
    access = [r.msg for r in caplog.records if r.name == "mnist.gateway.access"]
    assert access[-1]["key"] == "svc-predict" and "ms" in access[-1]
    json.dumps(access[-1])  # one JSON line each


async def test_a_gateway_before_any_model_says_why_it_cannot_answer(backends, tmp_path):
    """No registered model of that name yet: the gateway keeps following the registry, and /ready,
    /variants and the 503 name the cause."""
    gateway_settings = settings(backends.store_uri, tmp_path, backends.keys, model_name="not-trained-yet")
    async with in_process(gateway_settings, backends.keys, ready_timeout=None) as gw:
        await until(lambda: gw.variants()["champion"]["last_error"], 30, "the champion names its cause")
        ready = await gw.client.get("/ready")
        answer = await gw.score()
        listed = await gw.client.get("/variants", headers=gw.headers(backends.keys.admin))
    assert ready.status_code == 503 and ready.json() == {"ready": False}  # open route: says nothing more
    assert "no registered model named 'not-trained-yet'" in listed.json()["variants"][0]["last_error"]
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert "no registered model named 'not-trained-yet'" in answer.json()["message"]
