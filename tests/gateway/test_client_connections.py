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
