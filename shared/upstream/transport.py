"""The upstream room's interface: send a request, get status, headers and a body stream.

The proxy and the conformance suite (tests/shared/upstream/test_conformance.py)
speak only this. `UpstreamPool` is the implementation; another client
(aiohttp's, httpx's) would be wrapped in these two protocols in one place.

    response = await transport.send(UpstreamRequest(base_url, "/v1/chat/completions",
                                                    headers, body), deadline)
    while chunk := await response.read_chunk(idle=60):
        ...
    response.release()  # or response.close() to abort

Deadlines are on the running loop's clock (`loop.time()`). Every failure is an
`UpstreamError` (shared/upstream/errors.py) with a `FailureKind`.
"""

from __future__ import annotations

from collections.abc import Mapping
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

    Finish with `release()` (the connection may serve another request) or
    `close()` (abort: the backend sees the connection drop and stops).
    """

    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-case, in the order received
    content_type: str | None  # media type only, lower-case

    async def read_chunk(
        self, deadline: float | None = None, *, idle: float | None = None
    ) -> bytes: ...

    async def read_all(self, limit: int, deadline: float | None) -> bytes: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class Transport(Protocol):
    async def send(self, request: UpstreamRequest, deadline: float) -> ResponseStream:
        """Send `request` and wait (until `deadline`) for the answer's status and headers."""
        ...

    def close(self) -> None:
        """Drop every kept connection (at shutdown)."""
        ...
