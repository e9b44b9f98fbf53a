"""Forward one scoring request to a variant's backend and translate what can go wrong.

The body and content type go through unchanged (MLflow's protocol). A backend's 2xx comes back
as it is, its 4xx as a JSON error (``client_error_body``); a backend that fails becomes 502, one
that cannot be reached 503, one that is too slow 504, always with a JSON body.

The data path uses :class:`~serve.gateway.backend_http.BackendClient` (why: its docstring);
the control plane (health checks) uses httpx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from serve.gateway.backend_http import BackendClient, ResponseTooLarge
from serve.gateway.backends import Backend
from serve.gateway.errors import BadGateway, GatewayTimeout, Unavailable, client_error_code

JSON = "application/json"  # MLflow's scoring protocol's default content type
MAX_RELAYED_MESSAGE = 1000  # characters of a backend's non-JSON error text passed on


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


def client_error_body(status: int, body: bytes) -> bytes:
    """A backend's 4xx body as the gateway relays it: always a JSON object in MLflow's error shape.

    A JSON object loses its ``stack_trace`` (MLflow puts one in some 4xx bodies). Anything else
    (the plain text of MLflow's own 415 for an unsupported content type, an HTML page) becomes
    ``{"error_code": ..., "message": <that text on one line>}``.
    """
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        if "stack_trace" not in payload:
            return body
        payload.pop("stack_trace")
        return json.dumps(payload).encode()
    # Cut before decoding: a backend's error page may be large, and only its start is passed on.
    text = " ".join(body[: 4 * MAX_RELAYED_MESSAGE].decode("utf-8", "replace").split())[:MAX_RELAYED_MESSAGE]
    message = text or f"the model backend refused the request with HTTP {status}"
    return json.dumps({"error_code": client_error_code(status), "message": message}).encode()


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
    if status >= 400:
        return BackendAnswer(status, client_error_body(status, content), JSON)
    return BackendAnswer(status, content, content_type)
