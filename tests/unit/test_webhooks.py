"""The webhook receiver's checks, pure: MLflow's own signing code signs, ours verifies. A delivery
is accepted once, fresh, signed with the gateway's secret; anything else is refused before it is
remembered or parsed."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature as mlflow_signature

from mnist_mlops.serve.gateway.webhooks import Verifier, WebhookRefused, alias_move, signature

SECRET = "a-secret-shared-with-the-tracking-server"
BODY = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-12-06T10:00:00+00:00",
        "data": {"name": "mnist-cnn", "alias": "champion", "version": "7"},
    }
)


def delivery(body: str = BODY, secret: str = SECRET, at: float | None = None, delivery_id: str | None = None):
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(time.time() if at is None else at))
    headers = {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": mlflow_signature(secret, delivery_id, stamp, body),
    }
    return headers, body.encode()


def test_our_signature_is_mlflows():
    assert signature(SECRET, "id", "123", BODY.encode()) == mlflow_signature(SECRET, "id", "123", BODY)


def test_a_signed_fresh_delivery_is_accepted_once_and_names_the_alias_move():
    verifier = Verifier(SECRET)
    headers, body = delivery()
    payload = verifier.verify(headers, body, time.time())
    assert alias_move(payload, "mnist-cnn") == {
        "event": "model_version_alias.created",
        "alias": "champion",
        "version": "7",
    }
    with pytest.raises(WebhookRefused, match="replay"):
        verifier.verify(headers, body, time.time())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, b: ({k: v for k, v in h.items() if k != "X-MLflow-Signature"}, b), "needs the headers"),
        (lambda h, b: (h | {"X-MLflow-Signature": "v1,AAAA"}, b), "signature does not match"),
        (lambda h, b: (h, b.replace(b'"7"', b'"1"')), "signature does not match"),  # the body changed
        (lambda h, b: (h | {"X-MLflow-Timestamp": "soon"}, b), "Unix seconds"),
    ],
    ids=["unsigned", "wrong signature", "changed body", "bad timestamp"],
)
def test_a_delivery_not_signed_with_the_secret_is_refused_and_not_remembered(change, message):
    verifier = Verifier(SECRET)
    headers, body = delivery()
    with pytest.raises(WebhookRefused, match=message):
        verifier.verify(*change(headers, body), time.time())
    assert verifier.verify(headers, body, time.time())  # the genuine one still goes through


def test_a_stale_or_future_delivery_is_refused_even_when_signed():
    verifier = Verifier(SECRET)
    for offset in (-301, 301):
        headers, body = delivery(at=time.time() + offset)
        with pytest.raises(WebhookRefused, match="away from now"):
            verifier.verify(headers, body, time.time())


def test_another_secret_signs_nothing_the_gateway_accepts():
    headers, body = delivery(secret="someone-elses-secret-entirely")
    with pytest.raises(WebhookRefused, match="signature does not match"):
        Verifier(SECRET).verify(headers, body, time.time())


def test_events_of_other_models_and_other_kinds_are_not_alias_moves():
    payload = json.loads(BODY)
    assert alias_move(payload, "another-model") is None
    assert alias_move(payload | {"entity": "model_version", "action": "created"}, "mnist-cnn") is None
    deleted = {"entity": "model_version_alias", "action": "deleted", "data": {"name": "mnist-cnn", "alias": "x"}}
    assert alias_move(deleted, "mnist-cnn") == {"event": "model_version_alias.deleted", "alias": "x", "version": None}
