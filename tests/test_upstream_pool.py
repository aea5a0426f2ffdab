"""The pool's addresses: resolved through the (fake) resolver, checked, pinned and cached.

Names are resolved by a fake resolver at the resolver call: no DNS look-up
leaves the machine, and a private address is refused before any connection.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.upstream_http import ConnectFailed
from gateway.upstream_pool import UpstreamPool
from tests.test_upstream_http import HEADERS, OK, read_head, scripted, soon


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
            *(pool.post(named, "/v1/x", HEADERS, b"{}", soon()) for _ in range(3))
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
        await pool.post("http://backend.test:8000", "/v1/x", HEADERS, b"{}", soon())
    assert answer not in raised.value.reason and "backend.test" not in raised.value.reason
    pool.close()


async def test_a_name_that_does_not_resolve() -> None:
    pool = pool_with(FakeResolver(error=OSError("no such host")), allow_private=False)
    with pytest.raises(ConnectFailed, match="did not resolve"):
        await pool.post("http://backend.test:8000", "/v1/x", HEADERS, b"{}", soon())
    pool.close()
