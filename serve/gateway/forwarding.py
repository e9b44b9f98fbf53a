"""Forward one body to a variant's backend and translate what can go wrong.

The body and content type go through unchanged (MLflow's protocol). A backend's 2xx comes back as
it is, its 4xx as a JSON error (``protocol.client_error_body``); a backend that fails becomes 502,
one that cannot be reached 503, one that is too slow 504, always with a JSON body.

The data path's HTTP client is ``backend_http.BackendClient`` (why: its docstring and the
``backend client`` figures of ``make bench``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mnist_mlops.serve.gateway.backend_http import BackendClient, ResponseTooLarge
from mnist_mlops.serve.gateway.errors import BadGateway, GatewayTimeout, Unavailable
from mnist_mlops.serve.gateway.protocol import JSON, relayed_client_error
from mnist_mlops.serve.gateway.state import Backend


@dataclass(frozen=True, slots=True)
class BackendAnswer:
    """A backend's answer; ``predictions`` is set when the gateway parsed it already (a batch's
    answer split between its clients), so nobody parses it again."""

    status: int
    body: bytes
    content_type: str
    predictions: list | None = None
    backend_seconds: float = 0.0  # the backend call's time this answer is charged (a batch's, shared by rows)


def new_client(connections: int = 256) -> BackendClient:
    """A pooled client (keep-alive connections, no per-request handshake); create it in the loop."""
    return BackendClient(max_connections=connections)


def backend_headers(rid: str, content_type: str | None = None) -> dict[str, str]:
    """What a backend call carries: the request id and the body's content type (JSON by default)."""
    return {"Content-Type": content_type or JSON, "X-Request-ID": rid}


async def forward(
    client: BackendClient, backend: Backend, body: bytes, headers: dict[str, str], timeout: float
) -> BackendAnswer:
    if backend.headers:
        headers = headers | backend.headers
    backend.in_flight += 1
    started = time.perf_counter()
    try:
        status, content_type, content = await client.post(backend.url, "/invocations", body, headers, timeout)
    except TimeoutError:
        raise GatewayTimeout(f"the model backend (v{backend.version}) did not answer within {timeout:.0f}s") from None
    except ResponseTooLarge as error:
        raise BadGateway(f"the model backend (v{backend.version}) answered too much: {error}") from None
    except OSError:  # ConnectionError included: refused, reset, closed, a garbled answer
        backend.failed = True  # marked here, where the backend that failed is known (a batch picks its own)
        raise Unavailable(
            f"the model backend (v{backend.version}) cannot be reached", headers={"Retry-After": "2"}
        ) from None
    finally:
        backend.in_flight -= 1
    if status == 504:  # MLflow's own request timeout
        raise GatewayTimeout(f"the model backend (v{backend.version}) timed out")
    if status >= 500:
        raise BadGateway(f"the model backend (v{backend.version}) failed with HTTP {status}")
    took = time.perf_counter() - started
    if status >= 400:
        return BackendAnswer(*relayed_client_error(status, content), JSON, backend_seconds=took)
    return BackendAnswer(status, content, content_type, backend_seconds=took)
