"""The backend probe against backends that misbehave in every way it must survive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.cli.demo_backend import create_demo_app
from shared.probe import ProbeResult, probe_backend
from shared.upstream import UpstreamPool
from shared.urls import system_resolver
from tests.fakes import models_answering
from tests.support import ThreadedServer, free_port


async def probe(url: str, timeout: float = 2.0, api_key: str | None = None) -> ProbeResult:
    transport = UpstreamPool(
        verify_tls=True, connect_timeout=timeout, resolver=system_resolver, allow_private=True
    )
    try:
        return await probe_backend(transport, url, api_key, timeout=timeout)
    finally:
        transport.close()


def endless_models() -> Starlette:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"data": ['
        while True:
            yield b'{"id": "m"},' * 4096
            await asyncio.sleep(0)  # let the server notice the client has gone

    async def models(request: Request) -> Response:
        return StreamingResponse(body(), media_type="application/json")

    return Starlette(routes=[Route("/v1/models", models)])


async def test_healthy_backend_reports_its_models() -> None:
    with ThreadedServer(create_demo_app("m1", api_key="k-123456")) as backend:
        result = await probe(backend.url, api_key="k-123456")
    assert result.healthy and result.models == ("m1",) and result.http_status == 200
    assert result.response_time_ms > 0


@pytest.mark.parametrize(
    ("app", "error"),
    [
        (models_answering(500, "{}"), "HTTP 500"),
        (models_answering(200, "not json at all"), "not valid JSON"),
        (models_answering(200, '{"data": [{"name": "x"}]}'), 'without a string "id"'),
        (models_answering(200, "[]"), "not a model list"),
        (models_answering(200, '{"data": []}', delay=3), "within 1s"),
        (endless_models(), "larger than 1024 KiB"),
    ],
)
async def test_bad_answers(app: Starlette, error: str) -> None:
    with ThreadedServer(app) as backend:
        result = await probe(backend.url, timeout=1.0)
    assert not result.healthy
    assert result.error is not None and error in result.error


async def test_refused_connection() -> None:
    result = await probe(f"http://127.0.0.1:{free_port()}")
    assert not result.healthy and result.error == "connection refused"


async def _raw_server(reply: bytes) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    "reply",
    [b"this is not HTTP at all\r\n\r\n", b"", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"],
)
async def test_garbage_and_closed_connections(reply: bytes) -> None:
    server, port = await _raw_server(reply)
    async with server:
        result = await probe(f"http://127.0.0.1:{port}")
    assert not result.healthy and result.error
    assert "127.0.0.1" not in result.error


async def test_tls_error() -> None:
    """https to a server that speaks plain HTTP: the handshake fails, and says so."""
    with ThreadedServer(create_demo_app("m")) as backend:
        result = await probe(backend.url.replace("http://", "https://"))
    assert not result.healthy and result.error is not None
    assert "TLS" in result.error or "closed" in result.error


async def test_a_refused_probe_settles_its_connection() -> None:
    """A 401 on a kept-alive connection, with one connection allowed: every probe gets
    through and says so (the unread answer's connection was closed, not kept in use)."""
    refusal = b'HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\n\r\n{"error": ""}\n'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(refusal)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    transport = UpstreamPool(
        verify_tls=True,
        connect_timeout=1.0,
        resolver=system_resolver,
        allow_private=True,
        max_connections=1,
    )
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        results = [await probe_backend(transport, url, None, timeout=0.5) for _ in range(3)]
    transport.close()
    assert [result.error for result in results] == ["GET /v1/models answered HTTP 401"] * 3
