"""Forward one scoring request to a variant's backend and translate what can go wrong.

The body and content type go through unchanged (MLflow's protocol). A backend's 2xx and 4xx come
back as they are, minus any ``stack_trace`` field (MLflow puts one in some 4xx bodies); a
backend that fails becomes 502, one that cannot be reached 503, one that is too slow 504, always
with a JSON body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from serve.gateway.backends import Backend
from serve.gateway.errors import BadGateway, GatewayTimeout, Unavailable

FORWARDED_REQUEST_HEADERS = ("content-type", "accept")


@dataclass(frozen=True)
class BackendAnswer:
    status: int
    body: bytes
    content_type: str


def scrub_error_body(body: bytes) -> bytes:
    """Drop ``stack_trace`` from a JSON error body; anything else passes as it is."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if isinstance(payload, dict) and "stack_trace" in payload:
        payload.pop("stack_trace")
        return json.dumps(payload).encode()
    return body


async def forward(
    client: httpx.AsyncClient, backend: Backend, body: bytes, headers: dict[str, str], timeout: float
) -> BackendAnswer:
    backend.in_flight += 1
    try:
        response = await client.post(f"{backend.url}/invocations", content=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        raise GatewayTimeout(f"the model backend (v{backend.version}) did not answer within {timeout:.0f}s") from None
    except httpx.TransportError:
        raise Unavailable(
            f"the model backend (v{backend.version}) cannot be reached", headers={"Retry-After": "2"}
        ) from None
    finally:
        backend.in_flight -= 1
    content_type = response.headers.get("content-type", "application/json")
    if response.status_code == 504:  # MLflow's own request timeout
        raise GatewayTimeout(f"the model backend (v{backend.version}) timed out")
    if response.status_code >= 500:
        raise BadGateway(f"the model backend (v{backend.version}) failed with HTTP {response.status_code}")
    body = response.content if response.status_code < 400 else scrub_error_body(response.content)
    return BackendAnswer(response.status_code, body, content_type)
