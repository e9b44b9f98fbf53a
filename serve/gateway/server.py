"""The gateway's HTTP server: uvicorn, with the limits a public endpoint needs at the edge.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) and caps the connections and
tasks it serves at once (``limit_concurrency``: more get 503), but it waits for a request's headers
for ever: a client that opens hundreds of sockets, or trickles a header line every few seconds,
holds them all. ``header_timeout_protocol`` closes a connection whose request line and headers have
not all arrived within the timeout, counted from the connection's start or the end of its previous
response. (The body has its own deadline, in ``requests.read_body``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def header_timeout_protocol(timeout: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, closing connections whose headers take over ``timeout``."""

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:  # a keep-alive connection's next request
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def graceful_server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server, except that a SIGINT/SIGTERM stop that completed cleanly exits with 0.

    uvicorn re-raises the signal after its graceful shutdown, so the process would end "killed by
    SIGTERM" even though every request in flight was answered and every backend was stopped.
    """

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server(config)
