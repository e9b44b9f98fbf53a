"""The gateway's backend client against a real TCP peer on 127.0.0.1 whose behaviour each test sets:
keep-alive reuse, chunked answers, a peer that drops idle connections, hangs, garbles or floods."""

from __future__ import annotations

import asyncio

import pytest

from mnist_mlops.serve.gateway.backend_http import BackendClient, ResponseTooLarge

OK = b'{"predictions": [7]}'


def sized(body: bytes = OK, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


class Peer:
    """A TCP server answering each request with ``answer(request_number)`` (bytes, or None: hang)."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answer(len(self.requests))
                if answer is None:
                    await asyncio.sleep(3600)
                if answer == b"close":
                    writer.close()
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return


def run(coroutine):
    return asyncio.run(coroutine)


def test_keep_alive_reuses_one_connection_and_sends_the_headers() -> None:
    async def scenario():
        peer = Peer(lambda n: sized())
        async with peer as url:
            client = BackendClient()
            for _ in range(3):
                answer = await client.post(url, "/invocations", b'{"x": 1}', {"X-Request-ID": "abc"}, 5)
                assert answer == (200, "application/json", OK)
            await client.close()
        assert peer.connections == 1
        assert b"POST /invocations HTTP/1.1\r\n" in peer.requests[0]
        assert b"X-Request-ID: abc\r\n" in peer.requests[0]
        assert peer.requests[0].endswith(b'\r\n\r\n{"x": 1}')

    run(scenario())


def test_chunked_answers_are_joined() -> None:
    chunked = (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
    )

    async def scenario():
        async with Peer(lambda n: chunked) as url:
            client = BackendClient()
            assert await client.post(url, "/invocations", b"{}", {}, 5) == (
                400,
                "application/json; charset=utf-8",
                b'{"a": 1}',
            )
            await client.close()

    run(scenario())


def test_an_idle_connection_the_backend_dropped_is_replaced_without_an_error() -> None:
    async def scenario():
        peer = Peer(lambda n: sized())
        async with peer as url:
            client = BackendClient()
            await client.post(url, "/invocations", b"{}", {}, 5)
            for writer in peer.writers:  # what uvicorn does to a keep-alive connection idle for 5 s
                writer.close()
            await asyncio.sleep(0.05)
            assert (await client.post(url, "/invocations", b"{}", {}, 5))[0] == 200
            await client.close()
        assert peer.connections == 2

    run(scenario())


def test_a_connection_closed_before_any_answer_is_an_error_when_it_was_fresh() -> None:
    async def scenario():
        async with Peer(lambda n: b"close") as url:
            client = BackendClient()
            with pytest.raises(ConnectionError):
                await client.post(url, "/invocations", b"{}", {}, 5)
            await client.close()

    run(scenario())


def test_a_backend_that_does_not_answer_times_out_and_the_next_request_is_served() -> None:
    async def scenario():
        peer = Peer(lambda n: None if n == 1 else sized())
        async with peer as url:
            client = BackendClient()
            with pytest.raises(TimeoutError):
                await client.post(url, "/invocations", b"{}", {}, 0.2)
            assert (await client.post(url, "/invocations", b"{}", {}, 5))[0] == 200
            await client.close()
        assert peer.connections == 2  # the timed-out connection was not reused

    run(scenario())


def test_unreachable_garbled_and_oversized_answers_are_connection_errors() -> None:
    async def scenario():
        client = BackendClient(max_response_bytes=1000)
        async with Peer(lambda n: b"") as url:
            port = int(url.rsplit(":", 1)[1])
        with pytest.raises(OSError):  # nothing listens there any more
            await client.post(f"http://127.0.0.1:{port}", "/invocations", b"{}", {}, 5)
        async with Peer(lambda n: b"NOT HTTP AT ALL\r\n\r\n") as url:
            with pytest.raises(ConnectionError, match="malformed"):
                await client.post(url, "/invocations", b"{}", {}, 5)
        async with Peer(lambda n: sized(b"x" * 5000)) as url:
            with pytest.raises(ResponseTooLarge):
                await client.post(url, "/invocations", b"{}", {}, 5)
        await client.close()

    run(scenario())


def test_connection_close_answers_are_not_reused_and_concurrency_is_capped() -> None:
    async def scenario():
        peer = Peer(lambda n: sized(extra=b"Connection: close\r\n"))
        async with peer as url:
            client = BackendClient()
            for _ in range(2):
                assert (await client.post(url, "/invocations", b"{}", {}, 5))[0] == 200
            await client.close()
        assert peer.connections == 2

        slow = Peer(lambda n: sized())
        async with slow as url:
            client = BackendClient(max_connections=3)
            answers = await asyncio.gather(*(client.post(url, "/invocations", b"{}", {}, 5) for _ in range(20)))
            await client.close()
        assert all(status == 200 for status, _, _ in answers)
        assert slow.connections <= 3

    run(scenario())


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async def scenario():
        peer = Peer(lambda n: sized())
        async with peer as url:
            client = BackendClient()
            with pytest.raises(ValueError, match="line break"):
                await client.post(url, "/invocations", b"{}", {"X-Request-ID": "a\r\nEvil: 1"}, 5)
            await client.close()
        assert peer.requests == []

    run(scenario())
