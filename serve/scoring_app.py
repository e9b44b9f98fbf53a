"""MLflow's scoring protocol for one loaded pyfunc, as a bare ASGI app: the backends' fast path.

MLflow's own app (``mlflow.pyfunc.scoring_server.init``) wraps its ``invocations`` function in
FastAPI, an HTTP middleware and a hop to a worker thread per request; for a one-image request
those cost more than the model (``make bench ONLY=online`` serves one model both ways, in
alternating rounds). This app calls the same function, so parsing, schema enforcement, the
``params``, the answers and the error bodies are MLflow's, byte for byte; only the wrapping is
thinner:

- ``POST /invocations``: ``scoring_server.invocations`` on the event loop. The model uses every
  core for one batch, so requests are scored one after another, as they would be anyway; a
  request that waits for the model is held by the server, not refused.
- ``GET /ping``, ``GET /health``: 200 once the model is loaded (it is loaded before the app
  exists); ``GET /version``: MLflow's version.
- Anything else: 404 or 405 with a JSON body. An error MLflow raises keeps its status and JSON
  body; any other exception is a 500 with a JSON body and no trace (it is logged here).

Not carried over: MLflow's per-request timeout (``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``), which
answers 504 but cannot stop a prediction already running in its thread; the gateway in front of a
backend has its own deadline.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

JSON = "application/json"
HEALTH_PATHS = ("/ping", "/health")


def scoring_app(model) -> Callable[[dict, Receive, Send], Awaitable[None]]:
    """The ASGI app serving ``model`` (a loaded ``PyFuncModel``) over MLflow's scoring protocol."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server
    from mlflow.version import VERSION

    input_schema = model.metadata.get_input_schema()

    def invocations(body: bytes, content_type: str) -> tuple[int, str, bytes]:
        try:
            result = scoring_server.invocations(body, content_type, model, input_schema)
        except MlflowException as exc:
            return exc.get_http_status_code(), JSON, exc.serialize_as_json().encode()
        except Exception:  # a bug here or in the model: logged, never shown to the client
            logger.exception("scoring failed")
            return 500, JSON, _error("INTERNAL_ERROR", "the model failed to score this request")
        return result.status, result.mimetype, result.response.encode()

    async def app(scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/invocations":
            if method != "POST":
                await _respond(send, 405, JSON, _detail("Method Not Allowed"))
                return
            body = await _body(receive)
            if body is None:  # the client left before its request was whole: nobody to answer
                return
            content_type = _header(scope, b"content-type")
            await _respond(send, *invocations(body, content_type))
        elif path in (*HEALTH_PATHS, "/version"):
            if method != "GET":  # as MLflow's routes: HEAD is not one of them
                await _respond(send, 405, JSON, _detail("Method Not Allowed"))
            else:
                await _respond(send, 200, JSON, VERSION.encode() if path == "/version" else b"\n")
        else:
            await _respond(send, 404, JSON, _detail("Not Found"))

    return app


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive: Receive) -> bytes | None:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


async def _respond(send: Send, status: int, content_type: str, body: bytes) -> None:
    headers = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _detail(text: str) -> bytes:
    return json.dumps({"detail": text}, separators=(",", ":")).encode()  # as FastAPI writes it


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()
