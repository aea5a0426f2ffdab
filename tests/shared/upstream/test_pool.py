"""The pool's addresses: resolved through the (fake) resolver, checked, pinned and cached.

Names are resolved by a fake resolver at the resolver call: no DNS look-up
leaves the machine, and a private address is refused before any connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trustme

from shared.upstream import ConnectFailed, UpstreamPool, UpstreamRequest
from tests.shared.upstream.test_client import HEADERS, OK, read_head, scripted, soon


class FakeResolver:
    def __init__(self, *answers: str, error: OSError | None = None) -> None:
        self.answers = list(answers)
        self.error = error
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if self.error is not None:
            raise self.error
        return self.answers


def pool_with(resolver: FakeResolver, *, allow_private: bool) -> UpstreamPool:
    return UpstreamPool(
        verify_tls=True, connect_timeout=1.0, resolver=resolver, allow_private=allow_private
    )


async def test_a_name_is_resolved_once_and_the_address_pinned() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_head(reader))
        writer.write(OK)
        await reader.read()

    resolver = FakeResolver("127.0.0.1")
    pool = pool_with(resolver, allow_private=True)
    async with scripted(handler) as (url, connections):
        named = url.replace("127.0.0.1", "backend.test")
        answers = await asyncio.gather(
            *(pool.send(UpstreamRequest(named, "/v1/x", HEADERS, b"{}"), soon()) for _ in range(3))
        )
        assert [answer.status for answer in answers] == [200, 200, 200]
        for answer in answers:
            answer.close()
    pool.close()
    assert len(connections) == 3 and resolver.calls == ["backend.test"]  # cached
    port = url.rsplit(":", 1)[1]
    assert all(f"Host: backend.test:{port}".encode() in head for head in heads)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("10.1.2.3", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("127.0.0.1", "loopback"),
    ],
)
async def test_a_name_that_now_points_inside_is_refused(answer: str, problem: str) -> None:
    """DNS rebinding: registered while public, the name later resolves inside; never connected."""
    pool = pool_with(FakeResolver(answer), allow_private=False)
    with pytest.raises(ConnectFailed, match=problem) as raised:
        await pool.send(
            UpstreamRequest("http://backend.test:8000", "/v1/x", HEADERS, b"{}"), soon()
        )
    assert answer not in raised.value.reason and "backend.test" not in raised.value.reason
    pool.close()


async def test_a_name_that_does_not_resolve() -> None:
    pool = pool_with(FakeResolver(error=OSError("no such host")), allow_private=False)
    with pytest.raises(ConnectFailed, match="could not be resolved"):
        await pool.send(
            UpstreamRequest("http://backend.test:8000", "/v1/x", HEADERS, b"{}"), soon()
        )
    pool.close()


@asynccontextmanager
async def tls_backend(ca: trustme.CA, name: str) -> AsyncIterator[str]:
    """An HTTPS server on 127.0.0.1 whose certificate, signed by `ca`, is for `name`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_head(reader)
            writer.write(OK)
            await writer.drain()
            await reader.read()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    async with server:
        yield f"https://backend.test:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize(
    ("certificate_for", "verify", "accepted"),
    [
        ("backend.test", True, True),  # pinned to 127.0.0.1, verified against the name
        ("someone-else.test", True, False),
        ("someone-else.test", False, True),  # VERIFY_BACKEND_TLS=false
    ],
)
async def test_tls_is_verified_against_the_name(
    certificate_for: str, verify: bool, accepted: bool
) -> None:
    ca = trustme.CA()
    pool = UpstreamPool(
        verify_tls=verify,
        connect_timeout=2.0,
        resolver=FakeResolver("127.0.0.1"),
        allow_private=True,
    )
    if verify:
        ca.configure_trust(pool.ssl_context)
    async with tls_backend(ca, certificate_for) as url:
        if accepted:
            answer = await pool.send(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon())
            assert answer.status == 200 and await answer.read_all(1024, soon()) == b"{}"
            answer.release()
        else:
            with pytest.raises(ConnectFailed, match="TLS error"):
                await pool.send(UpstreamRequest(url, "/v1/x", HEADERS, b"{}"), soon())
    pool.close()
