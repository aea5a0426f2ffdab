"""Client connections against the real `gateway` process: head size, head timeout and
connection limits, each answered in the OpenAI shape before the connection closes."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import GatewayProcess, process_settings


def read_answer(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict[str, object]]:
    """Read until the server closes; the status and the JSON body."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.fixture
def gateway(tmp_path: Path, database_url: str) -> Iterator[GatewayProcess]:
    settings = process_settings(
        tmp_path, database_url, HEADER_TIMEOUT_SECONDS="1", MAX_CONNECTIONS="4"
    )
    with GatewayProcess(tmp_path, settings) as process:
        yield process


def connect(gateway: GatewayProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=10)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + b"X-Many: b\r\n" * 8_000 + b"\r\n",
        b"GET /health HTTP/1.1\r\nX-Endless: " + b"c" * 1_000_000,  # never finished
    ],
    ids=["one big header", "many headers", "an unfinished 1 MB header"],
)
def test_a_head_over_64_kib_is_431(gateway: GatewayProcess, head: bytes) -> None:
    with connect(gateway) as sock:
        # Refused while we may still be sending: the answer is there all the same.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
        status, body = read_answer(sock)
    assert status == 431
    assert body["error"]["code"] == 431  # type: ignore[index]


@pytest.mark.parametrize(
    "sent", [b"", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half"]
)
def test_a_head_that_does_not_arrive_in_time_is_408(gateway: GatewayProcess, sent: bytes) -> None:
    with connect(gateway) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        status, body = read_answer(sock)
    assert status == 408 and "HEADER_TIMEOUT_SECONDS" in str(body)
    assert 0.8 < time.monotonic() - started < 5


def test_connections_beyond_max_connections_get_503(gateway: GatewayProcess) -> None:
    held = [connect(gateway) for _ in range(4)]
    try:
        with connect(gateway) as extra:
            status, body = read_answer(extra)
        assert status == 503 and "MAX_CONNECTIONS" in str(body)
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, connections are served again.
    deadline = time.monotonic() + 10
    while httpx.get(f"{gateway.url}/health").status_code != 200:
        assert time.monotonic() < deadline


def test_a_large_body_is_not_a_large_head(gateway: GatewayProcess) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 500_000}]})
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=body)
    assert response.status_code == 404  # no such model; the head was fine
    assert httpx.get(f"{gateway.url}/health").status_code == 200


def test_an_idle_keep_alive_connection_gets_no_unasked_answer(gateway: GatewayProcess) -> None:
    """Between requests the head timeout does not run: a keep-alive connection idle for
    longer than HEADER_TIMEOUT_SECONDS gets nothing it did not ask for, and carries the
    next request."""
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(gateway) as sock:
        sock.sendall(request)
        assert read_one_answer(sock).startswith(b"HTTP/1.1 200")
        sock.settimeout(2.5)  # idle past the 1 s head timeout, not the 5 s keep-alive
        with pytest.raises(TimeoutError):
            sock.recv(65536)
        sock.settimeout(10)
        sock.sendall(request)
        assert read_one_answer(sock).startswith(b"HTTP/1.1 200")


def read_one_answer(sock: socket.socket) -> bytes:
    """One whole answer with a Content-Length (head and body may come in two reads)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    assert len(body) == length  # nothing of a next answer
    return head + b"\r\n\r\n" + body


class _Transport:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


HEADS = [
    (200, [(b"content-type", b"application/json"), (b"content-length", b"12")], "POST", True),
    (200, [(b"Content-Type", b"text/event-stream"), (b"X-Request-ID", b"abc")], "POST", True),
    (
        200,
        [(b"transfer-encoding", b"Chunked"), (b"x-ratelimit-limit-requests", b"60")],
        "GET",
        True,
    ),
    (204, [(b"x-a", b"1")], "DELETE", True),
    (304, [], "GET", True),
    (200, [(b"content-length", b"0")], "HEAD", True),
    (200, [(b"connection", b"keep-alive, Close"), (b"content-length", b"2")], "GET", True),
    (200, [(b"content-length", b"2")], "GET", False),  # a keep-alive the client did not ask
    (429, [(b"retry-after", b"1"), (b"content-length", b"5"), (b"x-v", b"a\tb c")], "POST", True),
    (200, [(b"content-length", b"3"), (b"content-length", b"4")], "POST", True),
    # Names that hold one uvicorn acts on without being it (the one-join head reads them).
    (200, [(b"x-content-length", b"9"), (b"content-length", b"2")], "POST", True),
    (200, [(b"x-content-", b"9"), (b"length", b"2")], "POST", True),
    (200, [(b"x-connection", b"close"), (b"content-length", b"2")], "GET", True),
    (200, [(bytearray(b"x-a"), b"1"), (b"content-length", b"2")], "POST", True),  # unhashable
]
BAD_HEADS = [[(b"x bad", b"1")], [(b"x-ok", b"a\r\nx-injected: 1")], [(b"x-ok", b"\x00")]]


def _cycle(kind: type, method: str, keep_alive: bool) -> tuple[object, _Transport]:
    import asyncio
    import logging

    from uvicorn.protocols.http.flow_control import FlowControl

    transport = _Transport()
    cycle = kind(
        scope={"method": method, "type": "http"},
        transport=transport,
        flow=FlowControl(transport),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[(b"date", b"Fri, 04 Dec 2026 18:00:00 GMT")],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )
    return cycle, transport


@pytest.mark.parametrize(("status", "headers", "method", "keep_alive"), HEADS)
async def test_a_head_is_written_as_uvicorn_writes_it(
    status: int, headers: list[tuple[bytes, bytes]], method: str, keep_alive: bool
) -> None:
    """HeadCycle checks a head's names and values in two searches instead of two per
    header: the bytes it writes and the state it leaves are uvicorn's own."""
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from gateway.client_connections import HeadCycle

    results = []
    for kind in (RequestResponseCycle, HeadCycle):
        cycle, transport = _cycle(kind, method, keep_alive)
        await cycle.send({"type": "http.response.start", "status": status, "headers": headers})  # type: ignore[attr-defined]
        state = {
            name: getattr(cycle, name)
            for name in ("keep_alive", "chunked_encoding", "expected_content_length")
        }
        results.append((transport.written, state))
    assert results[0] == results[1]


@pytest.mark.parametrize("headers", BAD_HEADS)
async def test_a_bad_head_is_refused_as_uvicorn_refuses_it(
    headers: list[tuple[bytes, bytes]],
) -> None:
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from gateway.client_connections import HeadCycle

    errors = []
    for kind in (RequestResponseCycle, HeadCycle):
        cycle, transport = _cycle(kind, "GET", True)
        with pytest.raises(RuntimeError) as raised:
            await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[attr-defined]
        errors.append(str(raised.value))
        assert transport.written == b""
    assert errors[0] == errors[1]


def test_the_guarded_protocol_answers_through_head_cycle() -> None:
    """The swap happens in a real server: the `send` an app is given belongs to a
    HeadCycle (and the answer arrives whole)."""
    import functools
    import threading

    import uvicorn

    from gateway.client_connections import (
        ConnectionGuard,
        ConnectionLimits,
        GuardedProtocol,
        HeadCycle,
    )
    from tests.support import wait_for

    seen: list[type] = []

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        seen.append(type(send.__self__))  # type: ignore[attr-defined]
        headers = [(b"content-length", b"2"), (b"x-ratelimit-limit-requests", b"60")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    guard = ConnectionGuard(ConnectionLimits(header_timeout=5, max_connections=10))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
        http=functools.partial(GuardedProtocol, guard=guard),  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=15, what="uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(2):  # and again on the kept-alive connection
                answer = client.get("/")
                assert answer.text == "ok" and answer.headers["x-ratelimit-limit-requests"] == "60"
        assert seen == [HeadCycle, HeadCycle]
    finally:
        server.should_exit = True
        thread.join(timeout=15)
