"""The upstream client's failures: typed, each with its `FailureKind`.

    UpstreamError             (kind says which; reason says it in words, URL-free)
    ├── ConnectFailed         no connection: DNS, ADDRESS_REFUSED, REFUSED,
    │                         CONNECT_TIMEOUT, TLS, UNREACHABLE
    ├── UpstreamTimeout       no answer, or no next chunk, in time: TIMEOUT
    ├── Disconnected          closed before the answer was complete: RESET, TRUNCATED
    └── InvalidResponse       not HTTP/1.x as we know it: BAD_RESPONSE, TOO_LARGE

What a kind means for the client and the pool is `shared.failures.FAILURES`.
"""

from __future__ import annotations

from shared.failures import FAILURES, FailureKind


class UpstreamError(Exception):
    """A failed exchange with a backend; `reason` never contains its URL or address."""

    def __init__(self, kind: FailureKind, reason: str | None = None) -> None:
        self.kind = kind
        self.reason = reason or FAILURES[kind].summary
        super().__init__(self.reason)


class ConnectFailed(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    def __init__(self, reason: str) -> None:
        super().__init__(FailureKind.TIMEOUT, reason)


class Disconnected(UpstreamError):
    """`before_response` is true when not a byte of an answer had arrived."""

    def __init__(self, kind: FailureKind, reason: str, *, before_response: bool) -> None:
        super().__init__(kind, reason)
        self.before_response = before_response


class InvalidResponse(UpstreamError):
    def __init__(self, reason: str, kind: FailureKind = FailureKind.BAD_RESPONSE) -> None:
        super().__init__(kind, reason)
