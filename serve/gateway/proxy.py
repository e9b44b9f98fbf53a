"""Forward one scoring request to a variant's backend and translate what can go wrong.

The body and content type go through unchanged (MLflow's protocol). A backend's 2xx and 4xx come
back as they are, minus any ``stack_trace`` field (MLflow puts one in some 4xx bodies); a
backend that fails becomes 502, one that cannot be reached 503, one that is too slow 504, always
with a JSON body.

The data path uses :class:`~serve.gateway.backend_http.BackendClient` (why: its docstring);
the control plane (health checks) uses httpx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from serve.gateway.backend_http import BackendClient, ResponseTooLarge
from serve.gateway.backends import Backend
from serve.gateway.errors import BadGateway, GatewayTimeout, Unavailable

JSON = "application/json"  # MLflow's scoring protocol's default content type


@dataclass(frozen=True)
class BackendAnswer:
    status: int
    body: bytes
    content_type: str


def new_session(connections: int = 256) -> BackendClient:
    """A pooled client (keep-alive connections, no per-request handshake); create it in the loop."""
    return BackendClient(max_connections=connections)


def backend_headers(rid: str, content_type: str | None = None) -> dict[str, str]:
    """What a backend call carries: the request id and the body's content type (JSON by default)."""
    return {"Content-Type": content_type or JSON, "X-Request-ID": rid}


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
    session: BackendClient, backend: Backend, body: bytes, headers: dict[str, str], timeout: float
) -> BackendAnswer:
    backend.in_flight += 1
    try:
        status, content_type, content = await session.post(backend.url, "/invocations", body, headers, timeout)
    except TimeoutError:
        raise GatewayTimeout(f"the model backend (v{backend.version}) did not answer within {timeout:.0f}s") from None
    except ResponseTooLarge as error:
        raise BadGateway(f"the model backend (v{backend.version}) answered too much: {error}") from None
    except OSError:  # ConnectionError included: refused, reset, closed, a garbled answer
        raise Unavailable(
            f"the model backend (v{backend.version}) cannot be reached", headers={"Retry-After": "2"}
        ) from None
    finally:
        backend.in_flight -= 1
    if status == 504:  # MLflow's own request timeout
        raise GatewayTimeout(f"the model backend (v{backend.version}) timed out")
    if status >= 500:
        raise BadGateway(f"the model backend (v{backend.version}) failed with HTTP {status}")
    return BackendAnswer(status, content if status < 400 else scrub_error_body(content), content_type)
