"""The upstream client's failures: typed, each with its `FailureKind`.

    UpstreamError             (kind says which; reason says it in words, URL-free)
    ├── ConnectFailed         no connection: DNS, ADDRESS_REFUSED, REFUSED,
    │                         CONNECT_TIMEOUT, TLS, UNREACHABLE
    ├── UpstreamTimeout       no answer, or no next chunk, in time: TIMEOUT
    ├── Disconnected          closed before the answer was complete: RESET, TRUNCATED
    ├── InvalidResponse       not HTTP/1.x as we know it: BAD_RESPONSE, TOO_LARGE
    └── PoolTimeout           no connection came free in time (ours, not the
                              backend's): POOL_FULL

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


class PoolTimeout(UpstreamError):
    """Every connection BACKEND_MAX_CONNECTIONS allows to the backend stayed busy until
    the deadline: our limit was reached, which says nothing against the backend (as
    httpcore's PoolTimeout is not its ReadTimeout)."""

    def __init__(self, reason: str) -> None:
        super().__init__(FailureKind.POOL_FULL, reason)


class Disconnected(UpstreamError):
    """`unsent` is true when the backend cannot have received the request: the
    connection was found closed before a byte of it was written. Only then may
    the request be sent again (on a new connection) without a second attempt."""

    def __init__(self, kind: FailureKind, reason: str, *, unsent: bool = False) -> None:
        super().__init__(kind, reason)
        self.unsent = unsent


def is_failed_status(status: int) -> bool:
    """Statuses never passed on to a client: they fail the attempt over (5xx, 429, 3xx)."""
    return status >= 500 or status == 429 or 300 <= status < 400


class FailedStatus(UpstreamError):
    """The backend answered with a status the proxy does not pass on: 5xx, 429, 3xx.

    `retry_after` is its Retry-After in seconds, when it gave one."""

    def __init__(self, status: int, retry_after: float | None = None) -> None:
        if status == 429:
            kind, reason = FailureKind.BUSY, "HTTP 429"
        elif status in (404, 405):
            kind, reason = FailureKind.NOT_OFFERED, f"the backend does not offer it (HTTP {status})"
        elif 300 <= status < 400:
            kind, reason = (
                FailureKind.BAD_RESPONSE,
                f"the backend answered with a redirect ({status})",
            )
        else:
            kind, reason = FailureKind.HTTP_ERROR, f"HTTP {status}"
        super().__init__(kind, reason)
        self.status = status
        self.retry_after = retry_after


class InvalidResponse(UpstreamError):
    def __init__(self, reason: str, kind: FailureKind = FailureKind.BAD_RESPONSE) -> None:
        super().__init__(kind, reason)
