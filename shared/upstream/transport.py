"""The upstream room's interface: send a request, get status, headers and a body stream.

The proxy and the conformance suite (tests/shared/upstream/test_conformance.py)
speak only this. `UpstreamPool` is the implementation; another client
(aiohttp's, httpx's) would be wrapped in these two protocols in one place.

    request = UpstreamRequest(base_url, "/v1/chat/completions", headers, body)
    async with transport.stream(request, deadline) as response:
        while chunk := await response.read_chunk(idle=60):
            ...
    # left: the connection goes back to the pool when the body was read whole,
    # and is closed otherwise (an early return, an exception, a cancellation)

A response that must outlive the block (a stream relayed to a client) is
entered on an `AsyncExitStack` whose `pop_all()` hands it to its new owner.

Deadlines are on the running loop's clock (`loop.time()`). Every failure is an
`UpstreamError` (shared/upstream/errors.py) with a `FailureKind`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One request to a backend; `path` is appended to the registered base URL's path."""

    base_url: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""
    method: str = "POST"


class ResponseStream(Protocol):
    """An answer whose status and headers arrived; its body is read whole or chunk by chunk.

    It is had only inside `Transport.stream()`'s block, which finishes it: the
    connection goes back to the pool when the body was read whole, and is
    closed otherwise (the backend sees it drop and stops generating). There is
    no way to finish it by hand, so no path can forget to.
    """

    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-case, in the order received
    content_type: str | None  # media type only, lower-case

    async def read_chunk(
        self, deadline: float | None = None, *, idle: float | None = None
    ) -> bytes: ...

    async def read_all(self, limit: int, deadline: float | None) -> bytes: ...


class Transport(Protocol):
    def stream(
        self, request: UpstreamRequest, deadline: float
    ) -> AbstractAsyncContextManager[ResponseStream]:
        """Send `request`, wait (until `deadline`) for the answer's status and headers,
        and hold the answer for the block: released when read whole, closed otherwise."""
        ...

    def close(self) -> None:
        """Drop every kept connection (at shutdown)."""
        ...
