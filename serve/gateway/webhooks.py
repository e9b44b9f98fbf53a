"""MLflow's registry webhooks: an alias moved on the tracking server reaches the gateway as an event,
and the follower reads the registry at once instead of on its next poll.

MLflow (3.3 and later, from ``mlflow server``) POSTs ``{"entity", "action", "timestamp", "data"}``
with three headers: ``X-MLflow-Delivery-Id`` (a UUID), ``X-MLflow-Timestamp`` (Unix seconds) and
``X-MLflow-Signature``: ``v1,`` + base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")).
A delivery is accepted only with a valid signature, a timestamp within ``TOLERANCE`` seconds of
now, and a delivery id not seen before (a replay within the window is refused; one outside it
fails the timestamp). The event is only a hint: the follower then reads the aliases from the
registry itself, through the same gate as a poll, so even a valid delivery cannot choose what is
served. Polling stays on as the fallback: MLflow delivers without a durable queue.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

SECRET_ENV = "MNIST_WEBHOOK_SECRET"  # from the environment only: never a command-line argument
PATH = "/hooks/mlflow"
TOLERANCE = 300.0  # seconds a delivery's timestamp may differ from now (MLflow's own example: 5 min)
MAX_BODY = 64 * 1024
MAX_REMEMBERED = 10_000  # delivery ids kept for replay detection, at most
ALIAS_EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
HEADERS = ("X-MLflow-Delivery-Id", "X-MLflow-Timestamp", "X-MLflow-Signature")


class WebhookRefused(Exception):
    """A delivery that is not MLflow's with our secret, or not fresh; the message says which."""


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's ``X-MLflow-Signature`` for a delivery (``mlflow.webhooks.delivery``'s scheme)."""
    content = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass
class Verifier:
    """Checks deliveries against one secret and remembers the delivery ids it accepted."""

    secret: str
    tolerance: float = TOLERANCE
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> dict:
        """The delivery's JSON payload, or ``WebhookRefused`` naming what is wrong. The signature
        is checked before anything is remembered: without the secret nothing changes state."""
        delivery_id, stamp, signed = (headers.get(name) for name in HEADERS)
        if not delivery_id or not stamp or not signed:
            raise WebhookRefused(f"a webhook delivery needs the headers {', '.join(HEADERS)}")
        try:
            sent_at = int(stamp)
        except ValueError:
            raise WebhookRefused("X-MLflow-Timestamp must be Unix seconds") from None
        expected = signature(self.secret, delivery_id, stamp, body)
        if not hmac.compare_digest(signed.encode(), expected.encode()):
            raise WebhookRefused(
                "the signature does not match: the webhook's secret is not the gateway's, or the body was changed"
            )
        if abs(now - sent_at) > self.tolerance:
            raise WebhookRefused(
                f"the delivery is {abs(now - sent_at):.0f} s away from now; at most {self.tolerance:.0f} s accepted"
            )
        self._forget_before(now - self.tolerance)
        if delivery_id in self._seen:
            raise WebhookRefused(f"delivery {delivery_id} was already received: a replay")
        self._seen[delivery_id] = sent_at
        while len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise WebhookRefused("the delivery's body is not a JSON object")
        return payload

    def _forget_before(self, cutoff: float) -> None:
        for delivery_id, sent_at in list(self._seen.items()):
            if sent_at < cutoff:
                del self._seen[delivery_id]


def alias_move(payload: dict, model_name: str) -> dict | None:
    """``{"event", "alias", "version"}`` when the payload moves an alias of ``model_name``; None for
    any other event (another model, a new version, a tag...)."""
    event = f"{payload.get('entity')}.{payload.get('action')}"
    data = payload.get("data")
    if event not in ALIAS_EVENTS or not isinstance(data, dict) or data.get("name") != model_name:
        return None
    version = data.get("version")
    return {"event": event, "alias": str(data.get("alias")), "version": None if version is None else str(version)}
