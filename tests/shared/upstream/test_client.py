"""The proxy's upstream HTTP/1.1 client against scripted servers speaking (and breaking) HTTP.

Each server is a real asyncio TCP server on 127.0.0.1 that reads one request
head and writes exactly the bytes a test gives it, so framing, keep-alive and
every way a backend can break are exercised on real sockets.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from shared.failures import FailureKind
from shared.upstream import (
    ConnectFailed,
    Disconnected,
    InvalidResponse,
    UpstreamError,
    UpstreamPool,
    UpstreamRequest,
    UpstreamTimeout,
)
from shared.upstream.connection import Connection
from shared.upstream.framing import Origin, encode_request, parse_origin
from shared.urls import system_resolver
from tests.support import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEADERS = {"Content-Type": "application/json"}
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:8000", Origin("127.0.0.1", 8000, False, "", "127.0.0.1:8000")),
        ("http://h", Origin("h", 80, False, "", "h")),
        ("http://h:80/", Origin("h", 80, False, "", "h")),
        (
            "https://x.ngrok.app/ollama/",
            Origin("x.ngrok.app", 443, True, "/ollama", "x.ngrok.app"),
        ),
        ("https://h:8443", Origin("h", 8443, True, "", "h:8443")),
        ("http://[::1]:8000", Origin("::1", 8000, False, "", "[::1]:8000")),
        (
            "http://bücher.example",
            Origin("bücher.example", 80, False, "", "xn--bcher-kva.example"),
        ),
    ],
)
def test_parse_origin(url: str, origin: Origin) -> None:
    assert parse_origin(url) == origin


def test_only_http_urls_have_an_origin() -> None:
    with pytest.raises(ConnectFailed):
        parse_origin("ftp://h/")


def test_encode_request_frames_one_post() -> None:
    origin = parse_origin("http://h:81/base")
    assert encode_request(origin, "/v1/x", {"A": "1", "B": "two"}, b"{}") == (
        b"POST /base/v1/x HTTP/1.1\r\nHost: h:81\r\nA: 1\r\nB: two\r\nContent-Length: 2\r\n\r\n{}"
    )


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/x", {"Authorization": "Bearer k\r\nX-Evil: 1"}),
        ("/v1/x", {"X-Request-ID": "a\nb"}),
        ("/v1/x HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET /", {}),
        ("/v1/a b", {}),
        ("/v1/x", {"Authorization": "Bearer clé-€"}),
    ],
)
def test_encode_request_refuses_injection(path: str, headers: dict[str, str]) -> None:
    with pytest.raises(UpstreamError):
        encode_request(parse_origin("http://h"), path, headers, b"")


async def read_head(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    await reader.readexactly(length)
    return head


@asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server running `handler` per connection; yields its URL and a connection counter."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", connections


def answering(*replies: bytes, then_close: bool = True) -> Handler:
    """Answer successive requests on one connection with `replies`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            await read_head(reader)
            writer.write(reply)
            await writer.drain()
        if not then_close:
            await reader.read()  # until the client closes

    return handler


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(
        verify_tls=True, connect_timeout=1.0, resolver=system_resolver, allow_private=True
    )
    yield pool
    pool.close()


def soon(seconds: float = 2.0) -> float:
    return asyncio.get_running_loop().time() + seconds


def idle(pool: UpstreamPool, url: str) -> list[Connection]:
    """The connections the pool keeps for `url`'s origin."""
    state = pool.origins.get(parse_origin(url))
    return state.idle if state is not None else []


async def test_a_plain_answer_and_keep_alive(pool: UpstreamPool) -> None:
    async with scripted(answering(OK, OK, then_close=False)) as (url, connections):
        for _ in range(2):
            async with pool.stream(
                UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()
            ) as response:
                assert response.status == 200 and response.content_type == "application/json"
                assert (b"content-type", b"application/json") in response.headers
                assert await response.read_all(1024, soon()) == b"{}"
        assert len(connections) == 1  # the second request reused the connection


async def test_chunks_arrive_as_they_are_sent(pool: UpstreamPool) -> None:
    go_on = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n"
        )
        await go_on.wait()
        writer.write(b"3\r\none\r\n0\r\n\r\n")
        await reader.read()

    async with (
        scripted(handler) as (url, _),
        pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as response,
    ):
        assert response.content_type == "text/event-stream" and response.chunked
        assert await response.read_chunk(soon()) == b"data: "
        go_on.set()
        assert await response.read_chunk(idle=2) == b"one"
        assert await response.read_chunk(idle=2) == b""


async def test_a_body_without_length_ends_with_the_connection(pool: UpstreamPool) -> None:
    reply = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\ndata: 2\n\n"
    async with scripted(answering(reply)) as (url, connections):
        async with pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as response:
            assert await response.read_all(1024, soon()) == b"data: 1\n\ndata: 2\n\n"
        async with (
            scripted(answering(OK)) as (other, _),
            pool.stream(UpstreamRequest(other, "/v1/x", HEADERS, b"{}"), soon()),
        ):
            pass
        assert len(connections) == 1 and not idle(pool, url)


async def test_an_interim_answer_is_skipped(pool: UpstreamPool) -> None:
    async with (
        scripted(answering(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)) as (url, _),
        pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as response,
    ):
        assert response.status == 200
        assert await response.read_all(1024, soon()) == b"{}"


@pytest.mark.parametrize(
    ("reply", "error", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n", InvalidResponse, "invalid HTTP response"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, InvalidResponse, "headers are too large"),
        (b"", Disconnected, "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", Disconnected, "closed the connection"),
    ],
)
async def test_broken_answers(
    pool: UpstreamPool, reply: bytes, error: type[UpstreamError], reason: str
) -> None:
    async with scripted(answering(reply)) as (url, _):
        with pytest.raises(error, match=reason) as raised:
            async with pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()):
                pass
    assert "127.0.0.1" not in raised.value.reason


async def test_a_body_that_breaks_off(pool: UpstreamPool) -> None:
    reply = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial": '
    async with (
        scripted(answering(reply)) as (url, _),
        pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as response,
    ):
        with pytest.raises(Disconnected, match="broke off"):
            await response.read_all(1024, soon())


async def test_a_response_over_the_limit(pool: UpstreamPool) -> None:
    async with (
        scripted(answering(OK)) as (url, _),
        pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as response,
    ):
        with pytest.raises(InvalidResponse, match="too large"):
            await response.read_all(1, soon())


async def test_a_pooled_connection_closed_by_the_backend_is_replaced(pool: UpstreamPool) -> None:
    """The backend closed its kept-alive connection without saying so, and the pool
    knows before it writes: the request goes out on a new connection, quietly."""
    async with scripted(answering(OK)) as (url, connections):
        async with pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as first:
            await first.read_all(1024, soon())
        (kept,) = idle(pool, url)
        await until(lambda: kept.closed)
        kept.closed = False  # as if its close were still unseen: found closed at write time
        kept.transport.abort()  # type: ignore[union-attr]
        async with pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as second:
            assert await second.read_all(1024, soon()) == b"{}"
        assert len(connections) == 2


async def test_a_request_the_backend_may_have_read_is_not_sent_again(pool: UpstreamPool) -> None:
    """The backend resets a kept-alive connection after reading the request: it may be
    generating, so the request fails instead of going out a second time."""
    requests: list[bytes] = []

    async def answer_once_then_reset(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        requests.append(await read_head(reader))
        writer.write(OK)
        await writer.drain()
        requests.append(await read_head(reader))
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        writer.transport.abort()

    async with scripted(answer_once_then_reset) as (url, connections):
        async with pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as first:
            await first.read_all(1024, soon())
        with pytest.raises(Disconnected) as raised:
            async with pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()):
                pass
        assert raised.value.kind is FailureKind.RESET and not raised.value.unsent
        assert len(requests) == 2 and len(connections) == 1


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_refused_connection(pool: UpstreamPool) -> None:
    request = UpstreamRequest(f"http://127.0.0.1:{free_port()}", "/v1/x", HEADERS, b"{}")
    with pytest.raises(ConnectFailed, match="connection refused"):
        async with pool.stream(request, soon()):
            pass


async def test_tls_to_a_plain_server(pool: UpstreamPool) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await reader.read()

    async with scripted(silent) as (url, _):
        request = UpstreamRequest(url.replace("http:", "https:"), "/v1/x", HEADERS, b"{}")
        with pytest.raises(ConnectFailed, match="TLS"):
            async with pool.stream(request, soon()):
                pass


async def test_no_answer_in_time(pool: UpstreamPool) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with scripted(hang) as (url, _):
        with pytest.raises(UpstreamTimeout):
            async with pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon(0.2)):
                pass


async def test_idle_limit_between_chunks(pool: UpstreamPool) -> None:
    """Chunks 0.1 s apart pass an idle limit of 0.3 s however long they go on; silence fails."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(8):
            writer.write(b"1\r\nx\r\n")
            await asyncio.sleep(0.1)
        await reader.read()  # then silence

    async with (
        scripted(trickle) as (url, _),
        pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as response,
    ):
        received = b""
        with pytest.raises(UpstreamTimeout, match=r"no data for 0\.3s"):
            while True:
                received += await response.read_chunk(idle=0.3)
        assert received == b"x" * 8


async def test_reading_pauses_ahead_of_a_slow_reader(pool: UpstreamPool) -> None:
    """A reader that does not read stops the reading from the socket (the backend waits)."""
    size = 4 * 1024 * 1024

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(b"x" * size)
        await writer.drain()
        await reader.read()

    async with (
        scripted(flood) as (url, _),
        pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as response,
    ):
        connection = response._connection
        deadline = soon(5)
        while not connection.paused:
            assert asyncio.get_running_loop().time() < deadline, "reading never paused"
            await asyncio.sleep(0.01)
        assert len(await response.read_all(size, soon(5))) == size
        assert not connection.paused


async def test_idle_connections_are_closed_after_the_keep_alive_time() -> None:
    pool = UpstreamPool(
        verify_tls=True,
        connect_timeout=1.0,
        resolver=system_resolver,
        allow_private=True,
        keepalive_seconds=0.2,
    )
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await reader.read()  # returns when the client closes
        closed.set()

    async with scripted(handler) as (url, _):
        async with pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as response:
            await response.read_all(1024, soon())
        await asyncio.wait_for(closed.wait(), timeout=5)
    assert not idle(pool, url)
    pool.close()


async def test_closing_mid_answer_drops_the_connection(pool: UpstreamPool) -> None:
    """Leaving the block mid-answer (a client that left) aborts: the backend sees the
    connection end at once."""
    ended = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n")
        await reader.read()
        ended.set()

    async with scripted(endless) as (url, _):
        async with pool.stream(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon()) as response:
            assert await response.read_chunk(soon()) == b"x"
        await asyncio.wait_for(ended.wait(), timeout=5)  # left unread: closed
        assert not idle(pool, url)
