"""What the gateway reads from a request before routing it: id, key, body within its limit."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from mnist_mlops.serve.gateway.auth import ApiKey, KeyRing, presented_key
from mnist_mlops.serve.gateway.errors import Forbidden, PayloadTooLarge, Unauthenticated

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RawRequest:
    """The part of a Starlette ``Request`` the scoring path reads, built straight from ASGI.

    ``headers`` is a plain dict of lower-case names (the last value of a repeated header wins),
    made in one pass: Starlette's ``Headers`` scans the header list on every lookup, and the
    scoring path looks up five.
    """

    __slots__ = ("_receive", "headers")

    def __init__(self, scope: dict, receive) -> None:
        self.headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        self._receive = receive

    async def stream(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return


def request_id(request: Request | RawRequest) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new random one.

    Random, not a counter: a request id is what ``/feedback`` names, so it must not be guessable.
    Same shape as ``uuid4().hex`` without building a UUID object on the hot path.
    """
    given = request.headers.get("x-request-id")
    return given if given and _CLIENT_REQUEST_ID.match(given) else os.urandom(16).hex()


def authenticate(request: Request | RawRequest, keys: KeyRing | None, role: str) -> ApiKey | None:
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


async def read_body(request: Request | RawRequest, limit: int) -> bytes:
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
