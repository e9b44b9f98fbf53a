"""The data path's HTTP client: pooled keep-alive HTTP/1.1 POSTs to model backends.

Why not httpx: at concurrency 1 the gateway's whole budget is a fraction of a millisecond over
calling the backend directly, and a general client's CPU per request is a large part of it.
``make bench`` measures this client against ``httpx.AsyncClient`` on the same backend (section
clients); it stays only while that figure says it is worth it. The HTTP parsing is httptools'
(the parser uvicorn serves with); what is ours is the connection pool and the request line.

Contract of :meth:`BackendClient.post`:

- Returns ``(status, content_type, body)`` for any complete HTTP answer (chunked or sized).
- Raises ``TimeoutError`` when no complete answer came within ``timeout`` seconds (that
  connection is closed: its state is unknown), ``ConnectionError`` when the backend cannot be
  reached or closes or garbles its answer, :class:`ResponseTooLarge` past ``max_response_bytes``.
- A pooled connection that the backend closed while idle (uvicorn drops idle keep-alive
  connections after 5 s) is detected and the request is sent once more on a fresh connection;
  only a connection that got no byte of an answer is retried, and scoring is a pure function,
  so a retry cannot do anything twice that matters.
- At most ``max_connections`` requests are in flight per backend; more wait for a connection.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import httptools

DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024


class ResponseTooLarge(ConnectionError):
    """The backend's answer exceeded the client's limit."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request on it at a time."""

    def __init__(self, max_response_bytes: int) -> None:
        self.max_response_bytes = max_response_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future | None = None
        self.received = 0  # bytes of the current answer seen so far
        self.closed = False
        self._content_type = b"application/json"
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.answer is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        if self.received > self.max_response_bytes:
            self._fail(ResponseTooLarge(f"the answer exceeds {self.max_response_bytes:,} bytes"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError("the backend closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self._content_type = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        answer, self.answer = self.answer, None
        result = (self.parser.get_status_code(), self._content_type.decode("latin-1"), b"".join(self._body))
        self._body, self._content_type = [], b"application/json"
        if not self.parser.should_keep_alive():
            self.close()
        if answer is not None and not answer.done():
            answer.set_result(result)

    # ours
    def send(self, request: bytes) -> asyncio.Future:
        self.received = 0
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.answer

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        answer, self.answer = self.answer, None
        self.close()
        if answer is not None and not answer.done():
            answer.set_exception(error)


class _Pool:
    """The connections to one backend: ``http(s)://host[:port]``, or ``unix:/path`` for a backend
    listening on a Unix socket (``control.launcher``: only the gateway can reach it)."""

    def __init__(self, url: str, max_connections: int, max_response_bytes: int) -> None:
        self.unix_path = unix_socket_path(url)
        if self.unix_path is not None:
            self.host, self.port, self.ssl, self.host_header = None, None, None, b"localhost"
        else:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"a backend URL must be http(s)://host[:port] or unix:/path, not {url!r}")
            self.host = parts.hostname
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
            self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
            self.host_header = parts.netloc.encode("ascii")
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(max_connections)
        self.max_response_bytes = max_response_bytes
        self.busy: set[_Connection] = set()

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self.unix_path is not None:
            _, connection = await loop.create_unix_connection(
                lambda: _Connection(self.max_response_bytes), self.unix_path
            )
            return connection
        _, connection = await loop.create_connection(
            lambda: _Connection(self.max_response_bytes), self.host, self.port, ssl=self.ssl
        )
        return connection

    def take_idle(self) -> _Connection | None:
        while self.idle:
            connection = self.idle.pop()  # the most recently used: the least likely to be stale
            if not connection.closed and not connection.transport.is_closing():
                return connection
        return None

    def close(self) -> None:
        for connection in [*self.idle, *self.busy]:
            connection.close()
        self.idle.clear()


def unix_socket_path(url: str) -> str | None:
    """The socket's path of a ``unix:/path`` backend URL; None for an HTTP URL."""
    return url[len("unix:") :] if url.startswith("unix:") else None


class BackendClient:
    """Keep-alive connections to every backend the gateway calls; create and use it in one loop."""

    def __init__(self, max_connections: int = 256, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self._pools: dict[str, _Pool] = {}
        self._closed = False

    def _pool(self, base_url: str) -> _Pool:
        pool = self._pools.get(base_url)
        if pool is None:
            pool = self._pools[base_url] = _Pool(base_url, self.max_connections, self.max_response_bytes)
        return pool

    async def post(
        self, base_url: str, path: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, str, bytes]:
        if self._closed:
            raise ConnectionError("the backend client is closed")
        pool = self._pool(base_url)
        request = _request(pool.host_header, path, body, headers)
        async with asyncio.timeout(timeout), pool.slots:
            connection = pool.take_idle()
            reused = connection is not None
            while True:
                if connection is None:
                    connection = await pool.connect()
                pool.busy.add(connection)
                try:
                    answer = await connection.send(request)
                except ConnectionError:
                    # An idle connection the backend had just closed: no byte of an answer came. Once.
                    if reused and connection.received == 0:
                        reused, connection = False, None
                        continue
                    raise
                except BaseException:  # timeout or cancellation: the answer may still come, drop it
                    connection.close()
                    raise
                finally:
                    pool.busy.discard(connection)
                if not connection.closed:
                    pool.idle.append(connection)
                return answer

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _request(host: bytes, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (path.encode("ascii"), host, len(body))]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} has a line break in it")
        lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)
