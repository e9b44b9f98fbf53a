"""MLflow's scoring protocol as the gateway reads it: each request parsed once, each answer once.

The gateway passes bodies through unchanged; it parses a JSON request only to know whether it can
join a micro-batch (a plain ``dataframe_split``: its columns and rows) and how many rows it holds,
and a backend's answer only where a batch's answer must be split between its clients. Both are done
once per request, here, and the parsed form travels with the request (to the batcher, the shadow
copy and the inference log) instead of being parsed again.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass

from mnist_mlops.serve.gateway.errors import BadRequest, client_error_code

JSON = "application/json"  # MLflow's scoring protocol's default content type
MAX_RELAYED_MESSAGE = 1000  # characters of a backend's non-JSON error text passed on
MAX_JSON_DEPTH = 32  # deeper nesting is no scoring request; refused before the parser recurses
# Larger requests go to the backend on their own: merging pays off for many small requests, and a
# batch of large images would spend the model's per-call decoding budget for all its clients.
MERGE_MAX_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ScoringRequest:
    """A request body and what the gateway knows of it after one parse.

    ``columns`` and ``rows`` are set for a request that may join a micro-batch: JSON
    ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` and nothing else (a
    ``params`` or ``index`` would differ between the requests of a batch), of at most
    ``MERGE_MAX_BYTES``.
    """

    body: bytes
    content_type: str
    columns: tuple | None = None
    rows: list | None = None
    row_count: int = 1  # rows (images) the request holds, as far as its shape tells; 1 when unknown

    @property
    def mergeable(self) -> bool:
        return self.rows is not None


def is_json(content_type: str | None) -> bool:
    return (content_type or JSON).split(";")[0].strip().lower() == JSON


def parse(body: bytes, content_type: str | None) -> ScoringRequest:
    """Parse ``body`` once. A JSON body that is not JSON, or nests deeper than
    ``MAX_JSON_DEPTH``, is refused here (400); anything else is the backend's to judge."""
    content_type = content_type or JSON
    if not is_json(content_type):
        return ScoringRequest(body, content_type)
    _check_depth(body)
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON ({exc}); send MLflow's scoring protocol") from None
    count = _row_count(payload)
    if len(body) > MERGE_MAX_BYTES:
        return ScoringRequest(body, content_type, row_count=count)
    columns, rows = _dataframe_split(payload)
    return ScoringRequest(body, content_type, columns, rows, count)


def _row_count(payload: object) -> int:
    """The rows of any of MLflow's JSON input shapes (what a per-key image quota charges)."""
    if not isinstance(payload, dict):
        return 1
    for key in ("dataframe_records", "instances", "inputs"):
        if isinstance(payload.get(key), list):
            return max(1, len(payload[key]))
    split = payload.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("data"), list):
        return max(1, len(split["data"]))
    return 1


_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _check_depth(body: bytes) -> None:
    """Refuse nesting deeper than ``MAX_JSON_DEPTH`` before parsing (Python's parser recurses, and
    a few thousand levels exhaust its stack). Strings are skipped whole by the scan, in C."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise BadRequest(
                    f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels; send MLflow's scoring protocol"
                )
        elif token in (b"]", b"}"):
            depth -= 1


def _dataframe_split(payload: object) -> tuple[tuple | None, list | None]:
    if not isinstance(payload, dict) or set(payload) != {"dataframe_split"}:
        return None, None
    split = payload["dataframe_split"]
    if not isinstance(split, dict) or set(split) != {"columns", "data"}:
        return None, None
    columns, data = split["columns"], split["data"]
    if not isinstance(columns, list) or not isinstance(data, list) or not data:
        return None, None
    if not all(isinstance(c, str) for c in columns) or not all(isinstance(r, list) for r in data):
        return None, None
    return tuple(columns), data


def merged_body(columns: tuple, rows: list) -> bytes:
    """One ``dataframe_split`` body holding ``rows``."""
    return json.dumps({"dataframe_split": {"columns": list(columns), "data": rows}}).encode()


def predictions_of(body: bytes) -> list:
    """The ``predictions`` list of a backend's 200 answer (ValueError if there is none)."""
    payload = json.loads(body)
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    if not isinstance(predictions, list):
        raise ValueError("the answer has no predictions list")
    return predictions


def predictions_body(predictions: list) -> bytes:
    return json.dumps({"predictions": predictions}).encode()


def relayed_client_error(status: int, body: bytes) -> tuple[int, bytes]:
    """A backend's 4xx as the gateway answers it: ``client_error_body``, and MLflow's 429 for
    ``REQUEST_LIMIT_EXCEEDED`` as 413, because the model raises it for a request too costly to
    decode (``serve.model.errors.RequestTooCostly``): its size, not its rate, and no retry helps."""
    relayed = client_error_body(status, body)
    if status == 429 and b"REQUEST_LIMIT_EXCEEDED" in relayed:
        with contextlib.suppress(ValueError):
            if json.loads(relayed).get("error_code") == "REQUEST_LIMIT_EXCEEDED":
                return 413, relayed
    return status, relayed


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
