"""HTTP/1.1 conformance of a Transport: a table of answers and the outcome each must give.

Any implementation of `shared.upstream.Transport` must pass this table (add it
to TRANSPORTS). Each case is a real TCP server on 127.0.0.1 that reads the
request and writes exactly the bytes given, then ends the connection the way
the case says: a clean close (FIN), a reset (RST) right away or once the client
has the answer's head, or not at all. The outcome is the status and body the
client reads, or the FailureKind it fails with; framing the parser refuses
(RFC 9112 section 6.3: both length headers, duplicate or invalid lengths) is a
bad response, never a guess.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import pytest

from shared.failures import FailureKind
from shared.upstream import Transport, UpstreamError, UpstreamPool, UpstreamRequest
from shared.urls import system_resolver

End = Literal["close", "reset", "reset_after_head", "hold"]
LIMIT = 1024 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    reply: bytes
    expect: tuple[int, bytes] | FailureKind  # (status, body) read, or the failure
    end: End = "close"
    method: str = "POST"
    deadline: float = 2.0


def head(status: str = "200 OK", *headers: str, version: str = "HTTP/1.1") -> bytes:
    lines = "".join(f"{line}\r\n" for line in headers)
    return f"{version} {status}\r\n{lines}\r\n".encode()


BIG = "X-Filler: " + "a" * 70_000
MANY = [f"X-Header-{n}: {'b' * 100}" for n in range(700)]
CHUNKED = "Transfer-Encoding: chunked"

CASES = [
    # Framing that must be read exactly.
    Case("content-length", head("200 OK", "Content-Length: 5") + b"hello", (200, b"hello")),
    Case(
        "chunked with extensions and trailers",
        head("200 OK", CHUNKED)
        + b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        (200, b"hello world"),
    ),
    Case("close-delimited, closed cleanly", head("200 OK") + b"until close", (200, b"until close")),
    Case(
        "HTTP/1.0 close-delimited",
        head("200 OK", version="HTTP/1.0") + b"old",
        (200, b"old"),
    ),
    Case(
        "HEAD: no body whatever the length",
        head("200 OK", "Content-Length: 5"),
        (200, b""),
        method="HEAD",
        end="hold",
    ),
    Case("204 has no body", head("204 No Content"), (204, b""), end="hold"),
    Case("304 has no body", head("304 Not Modified", "Content-Length: 5"), (304, b""), end="hold"),
    Case(
        "100 Continue, then the answer",
        head("100 Continue") + head("200 OK", "Content-Length: 2") + b"{}",
        (200, b"{}"),
    ),
    Case(
        "103 Early Hints, then the answer",
        head("103 Early Hints", "Link: </a>; rel=preload")
        + head("200 OK", "Content-Length: 2")
        + b"{}",
        (200, b"{}"),
    ),
    Case("an error status is an answer", head("500 Oops", "Content-Length: 1") + b"!", (500, b"!")),
    # Framing that must be refused.
    Case(
        "both Content-Length and chunked",
        head("200 OK", "Content-Length: 5", CHUNKED) + b"5\r\nhello\r\n0\r\n\r\n",
        FailureKind.BAD_RESPONSE,
    ),
    Case(
        "duplicate equal Content-Length",
        head("200 OK", "Content-Length: 5", "Content-Length: 5") + b"hello",
        FailureKind.BAD_RESPONSE,
    ),
    Case(
        "duplicate different Content-Length",
        head("200 OK", "Content-Length: 5", "Content-Length: 7") + b"hello",
        FailureKind.BAD_RESPONSE,
    ),
    Case(
        "a list as Content-Length",
        head("200 OK", "Content-Length: 5, 5") + b"hello",
        FailureKind.BAD_RESPONSE,
    ),
    Case(
        "negative Content-Length",
        head("200 OK", "Content-Length: -5") + b"hello",
        FailureKind.BAD_RESPONSE,
    ),
    Case(
        "invalid Content-Length",
        head("200 OK", "Content-Length: five") + b"hello",
        FailureKind.BAD_RESPONSE,
    ),
    Case(
        "invalid chunk size",
        head("200 OK", CHUNKED) + b"zz\r\nhello\r\n0\r\n\r\n",
        FailureKind.BAD_RESPONSE,
    ),
    Case(
        "101 nobody asked for",
        head("101 Switching Protocols", "Upgrade: websocket", "Connection: upgrade"),
        FailureKind.BAD_RESPONSE,
        end="hold",
    ),
    Case(
        "101 without Upgrade", head("101 Switching Protocols"), FailureKind.BAD_RESPONSE, end="hold"
    ),
    Case("not HTTP", b"SSH-2.0-OpenSSH_9.6\r\n", FailureKind.BAD_RESPONSE),
    Case(
        "one oversized header", head("200 OK", BIG, "Content-Length: 0"), FailureKind.BAD_RESPONSE
    ),
    Case(
        "headers oversized together",
        head("200 OK", *MANY, "Content-Length: 0"),
        FailureKind.BAD_RESPONSE,
    ),
    Case(
        "oversized trailers",
        head("200 OK", CHUNKED) + b"2\r\n{}\r\n0\r\n" + "\r\n".join(MANY).encode() + b"\r\n\r\n",
        FailureKind.BAD_RESPONSE,
        end="hold",
    ),
    Case(
        "answer over the size limit",
        head("200 OK", f"Content-Length: {LIMIT + 1}"),
        FailureKind.TOO_LARGE,
        end="hold",
    ),
    # Connections that end too early.
    Case("reset before the head", b"", FailureKind.RESET, end="reset"),
    Case("closed before the head", b"", FailureKind.RESET),
    Case("reset inside the head", b"HTTP/1.1 200 OK\r\nContent-Le", FailureKind.RESET, end="reset"),
    Case("closed inside the head", b"HTTP/1.1 200 OK\r\nContent-Le", FailureKind.RESET),
    Case(
        "body shorter than its length, closed",
        head("200 OK", "Content-Length: 50") + b"{",
        FailureKind.TRUNCATED,
    ),
    Case(
        "body shorter than its length, reset",
        head("200 OK", "Content-Length: 50") + b"{",
        FailureKind.TRUNCATED,
        end="reset_after_head",
    ),
    Case(
        "chunked without its last chunk, closed",
        head("200 OK", CHUNKED) + b"2\r\n{}\r\n",
        FailureKind.TRUNCATED,
    ),
    Case(
        "chunked, reset inside a chunk",
        head("200 OK", CHUNKED) + b'9\r\n{"a":',
        FailureKind.TRUNCATED,
        end="reset_after_head",
    ),
    Case(
        "close-delimited, reset",
        head("200 OK") + b'{"partial":',
        FailureKind.TRUNCATED,
        end="reset_after_head",
    ),
    # Silence.
    Case("no answer", b"", FailureKind.TIMEOUT, end="hold", deadline=0.3),
    Case(
        "a body that never comes",
        head("200 OK", "Content-Length: 5"),
        FailureKind.TIMEOUT,
        end="hold",
        deadline=0.3,
    ),
]


def _pool() -> Transport:
    return UpstreamPool(
        verify_tls=True, connect_timeout=1.0, resolver=system_resolver, allow_private=True
    )


TRANSPORTS: dict[str, Callable[[], Transport]] = {"UpstreamPool": _pool}


async def _read_request(reader: asyncio.StreamReader) -> None:
    request_head = await reader.readuntil(b"\r\n\r\n")
    for line in request_head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER with a zero timeout)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@asynccontextmanager
async def serving(case: Case, head_seen: asyncio.Event) -> AsyncIterator[str]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _read_request(reader)
            writer.write(case.reply)
            await writer.drain()
            if case.end == "reset":
                _reset(writer)
            elif case.end == "reset_after_head":
                await head_seen.wait()
                _reset(writer)
            elif case.end == "hold":
                await reader.read()  # until the client goes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def outcome(transport: Transport, url: str, case: Case, head_seen: asyncio.Event) -> object:
    deadline = asyncio.get_running_loop().time() + case.deadline
    body = b"" if case.method in ("GET", "HEAD") else b"{}"
    request = UpstreamRequest(url, "/v1/x", {"Content-Type": "application/json"}, body, case.method)
    try:
        async with transport.stream(request, deadline) as response:
            head_seen.set()
            return (response.status, await response.read_all(LIMIT, deadline))
    except UpstreamError as error:
        return error.kind


@pytest.mark.parametrize("make_transport", TRANSPORTS.values(), ids=list(TRANSPORTS))
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_conformance(case: Case, make_transport: Callable[[], Transport]) -> None:
    transport = make_transport()
    head_seen = asyncio.Event()
    try:
        async with serving(case, head_seen) as url:
            assert await outcome(transport, url, case, head_seen) == case.expect
    finally:
        transport.close()


def test_every_failure_the_table_expects_is_a_kind_the_mapping_knows() -> None:
    from shared.failures import FAILURES

    assert {case.expect for case in CASES if isinstance(case.expect, FailureKind)} <= set(FAILURES)
