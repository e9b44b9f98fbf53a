"""What the gateway reads from a request before routing it: id, key, body within its limit."""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request

from serve.gateway.auth import ApiKey, KeyRing, presented_key
from serve.gateway.errors import Forbidden, PayloadTooLarge, Unauthenticated

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id(request: Request) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new one."""
    given = request.headers.get("x-request-id")
    return given if given and _CLIENT_REQUEST_ID.match(given) else uuid.uuid4().hex


def authenticate(request: Request, keys: KeyRing | None, role: str) -> ApiKey | None:
    """The caller's key if it may act as ``role``; None when the gateway runs without keys."""
    if keys is None:
        return None
    presented = presented_key(request.headers)
    if not presented:
        raise Unauthenticated(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = keys.identify(presented)
    if key is None:
        raise Unauthenticated("the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    if not key.allows(role):
        raise Forbidden(f"the key {key.name!r} has the role {key.role!r}; this needs {role!r}")
    return key


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (before reading it whole)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {int(declared):,} bytes; at most {limit:,} accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
