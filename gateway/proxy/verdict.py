"""What a client is told when no backend gave an answer to pass on. Pure.

One failure kind decides the status (shared/failures.py): 502 when backends
were unreachable or broke, 504 when the request's deadline passed, 429 when
every backend tried was busy (with the smallest Retry-After they gave), 503
with a Retry-After when the last try found no free connection within our own
BACKEND_MAX_CONNECTIONS (the wait for one may have spent the deadline: still
ours, not the backend's timeout).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from shared.errors import (
    BadGateway,
    GatewayError,
    GatewayTimeout,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
)
from shared.failures import FailureKind, policy_of
from shared.upstream import FailedStatus, UpstreamError

_BY_STATUS: dict[int, type[GatewayError]] = {
    400: InvalidRequest,
    404: NotFound,
    429: RateLimited,
    502: BadGateway,
    503: ServiceUnavailable,
    504: GatewayTimeout,
}
# Connections come free as requests in flight end: worth trying again soon.
POOL_FULL_RETRY_AFTER = "1"


def parse_retry_after(value: bytes | None) -> float | None:
    """Retry-After in seconds (the delay form; an HTTP date is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def no_answer(
    model: str,
    failures: Sequence[UpstreamError],
    *,
    deadline_passed: bool,
    request_timeout: float,
) -> GatewayError:
    if failures and failures[-1].kind is FailureKind.POOL_FULL:
        return ServiceUnavailable(
            f"every connection to the backend of model {model!r} is busy: "
            f"{failures[-1].reason}; retry later",
            headers={"Retry-After": POOL_FULL_RETRY_AFTER},
        )
    if not failures or deadline_passed:
        after = f"; last: {failures[-1].reason}" if failures else ""
        return GatewayTimeout(
            f"no answer within REQUEST_TIMEOUT_SECONDS ({request_timeout:g}s){after}"
        )
    if all(failure.kind is FailureKind.BUSY for failure in failures):
        waits = [
            failure.retry_after
            for failure in failures
            if isinstance(failure, FailedStatus) and failure.retry_after is not None
        ]
        headers = {"Retry-After": str(max(1, math.ceil(min(waits))))} if waits else {}
        return RateLimited(
            f"every backend of model {model!r} tried is busy (HTTP 429); retry later",
            headers=headers,
        )
    last = failures[-1]
    error_class = _BY_STATUS.get(policy_of(last.kind).status, BadGateway)
    return error_class(
        f"all {len(failures)} attempt(s) for model {model!r} failed; last: {last.reason}"
    )
