"""What the gateway reads from a request before routing it: ids, key, body within its limits."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from mnist_mlops.serve.gateway.auth import ApiKey, KeyRing, presented_key
from mnist_mlops.serve.gateway.errors import Forbidden, PayloadTooLarge, RequestTimeout, Unauthenticated

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


def new_request_id() -> str:
    """The gateway's own id for a request: what the inference log keys it by and ``/feedback``
    names. Never the client's (a client choosing ids could overwrite or claim another's record),
    and random, not a counter, so it cannot be guessed. Same shape as ``uuid4().hex`` without
    building a UUID object on the hot path."""
    return os.urandom(16).hex()


def client_request_id(request: Request | RawRequest) -> str | None:
    """The client's own ``X-Request-ID`` when it is a sane token: kept for correlation only
    (logged, echoed as ``X-Client-Request-ID``), never used as a key."""
    given = request.headers.get("x-request-id")
    return given if given and _CLIENT_REQUEST_ID.match(given) else None


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


async def read_body(request: Request | RawRequest, limit: int, timeout: float | None = None) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (before reading it
    whole), and with 408 when it has not all arrived within ``timeout`` seconds (a client that
    trickles its body, or never finishes it, does not hold the gateway)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {int(declared):,} bytes; at most {limit:,} accepted")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the request body exceeds {limit:,} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout:g} s ({size:,} bytes came); send it at once",
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)
