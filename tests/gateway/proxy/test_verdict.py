"""What the client is told when no backend answered: a table."""

from __future__ import annotations

import pytest

from gateway.proxy.verdict import no_answer, parse_retry_after
from shared.failures import FailureKind
from shared.upstream import (
    ConnectFailed,
    Disconnected,
    FailedStatus,
    PoolTimeout,
    UpstreamError,
    UpstreamTimeout,
)

REFUSED = ConnectFailed(FailureKind.REFUSED, "connection refused")
RESET = Disconnected(FailureKind.RESET, "the backend closed the connection")
TIMEOUT = UpstreamTimeout("no first event")
POOL_FULL = PoolTimeout("no free connection to the backend in time (BACKEND_MAX_CONNECTIONS)")


@pytest.mark.parametrize(
    ("failures", "deadline_passed", "status", "error_type", "retry_after"),
    [
        ([REFUSED], False, 502, "server_error", None),
        ([REFUSED, RESET], False, 502, "server_error", None),
        ([FailedStatus(500)], False, 502, "server_error", None),
        ([FailedStatus(302)], False, 502, "server_error", None),
        ([TIMEOUT], False, 504, "timeout_error", None),
        ([REFUSED], True, 504, "timeout_error", None),  # the deadline passed meanwhile
        ([], True, 504, "timeout_error", None),
        ([FailedStatus(429, 7.0), FailedStatus(429, 2.5)], False, 429, "rate_limit_error", "3"),
        ([FailedStatus(429)], False, 429, "rate_limit_error", None),
        ([FailedStatus(429), REFUSED], False, 502, "server_error", None),
        # Our own connection limit: 503, the deadline spent waiting for it or not.
        ([POOL_FULL], False, 503, "service_unavailable", "1"),
        ([POOL_FULL], True, 503, "service_unavailable", "1"),
        ([TIMEOUT, POOL_FULL], True, 503, "service_unavailable", "1"),
        ([POOL_FULL, REFUSED], False, 502, "server_error", None),
        (
            [UpstreamError(FailureKind.UNSENDABLE, "bad header")],
            False,
            400,
            "invalid_request_error",
            None,
        ),
    ],
)
def test_no_answer(
    failures: list[UpstreamError],
    deadline_passed: bool,
    status: int,
    error_type: str,
    retry_after: str | None,
) -> None:
    error = no_answer("m", failures, deadline_passed=deadline_passed, request_timeout=300)
    assert (error.status_code, error.error_type) == (status, error_type)
    assert error.headers.get("Retry-After") == retry_after
    if failures:
        assert failures[-1].reason in error.message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"3", 3.0),
        (b"0.5", 0.5),
        (None, None),
        (b"Wed, 21 Oct 2015 07:28:00 GMT", None),
        (b"-1", None),
        (b"inf", None),
        (b"nan", None),
    ],
)
def test_parse_retry_after(value: bytes | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds
