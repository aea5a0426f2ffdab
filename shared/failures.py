"""Why contacting a backend failed: one set of reasons for the proxy and the probe.

Each failure the upstream client or the probe meets is one `FailureKind`.
What follows from it (the HTTP status a client sees, the error type in the
OpenAI body, whether it counts against the backend, the words in the log)
is looked up in `FAILURES`, here and nowhere else. Nothing downstream
matches message text.

    FailureKind
    ├── connecting:  DNS, ADDRESS_REFUSED, REFUSED, CONNECT_TIMEOUT, TLS, UNREACHABLE
    ├── exchanging:  RESET, TRUNCATED, TIMEOUT, BAD_RESPONSE, TOO_LARGE
    ├── answered:    HTTP_ERROR (5xx), BUSY (429), NOT_OFFERED (404/405: not this endpoint)
    └── ours:        UNSENDABLE (the request cannot be written as HTTP/1.1),
                     POOL_FULL (no connection of BACKEND_MAX_CONNECTIONS came free in time)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType


class FailureKind(enum.StrEnum):
    DNS = "dns"
    ADDRESS_REFUSED = "address_refused"
    REFUSED = "refused"
    CONNECT_TIMEOUT = "connect_timeout"
    TLS = "tls"
    UNREACHABLE = "unreachable"
    RESET = "reset"
    TRUNCATED = "truncated"
    TIMEOUT = "timeout"
    BAD_RESPONSE = "bad_response"
    TOO_LARGE = "too_large"
    HTTP_ERROR = "http_error"
    BUSY = "busy"
    NOT_OFFERED = "not_offered"
    UNSENDABLE = "unsendable"
    POOL_FULL = "pool_full"


@dataclass(frozen=True)
class FailurePolicy:
    """What one kind of failure means for the client and for the pool."""

    status: int  # the HTTP status a client is answered with
    error_type: str  # the OpenAI error `type`
    counts_against_backend: bool  # evidence that the backend is broken (not busy, not ours)
    summary: str  # the words for logs and messages, without URL or address


def _bad_gateway(summary: str) -> FailurePolicy:
    return FailurePolicy(502, "server_error", True, summary)


FAILURES: MappingProxyType[FailureKind, FailurePolicy] = MappingProxyType(
    {
        FailureKind.DNS: _bad_gateway("DNS lookup failed"),
        FailureKind.ADDRESS_REFUSED: _bad_gateway("the backend's address is not allowed"),
        FailureKind.REFUSED: _bad_gateway("connection refused"),
        FailureKind.CONNECT_TIMEOUT: FailurePolicy(
            504, "timeout_error", True, "timed out connecting"
        ),
        FailureKind.TLS: _bad_gateway("TLS error"),
        FailureKind.UNREACHABLE: _bad_gateway("could not connect"),
        FailureKind.RESET: _bad_gateway("the backend closed the connection"),
        FailureKind.TRUNCATED: _bad_gateway("the backend's answer broke off"),
        FailureKind.TIMEOUT: FailurePolicy(504, "timeout_error", True, "no answer in time"),
        FailureKind.BAD_RESPONSE: _bad_gateway("the backend sent an invalid HTTP answer"),
        FailureKind.TOO_LARGE: _bad_gateway("the backend's answer is too large"),
        FailureKind.HTTP_ERROR: _bad_gateway("the backend answered with a server error"),
        FailureKind.BUSY: FailurePolicy(429, "rate_limit_error", False, "the backend is busy"),
        FailureKind.NOT_OFFERED: FailurePolicy(
            404, "not_found_error", False, "the backend does not offer this endpoint"
        ),
        FailureKind.UNSENDABLE: FailurePolicy(
            400, "invalid_request_error", False, "the request cannot be sent as HTTP/1.1"
        ),
        # Our own limit, which a busy backend fills without being at fault.
        FailureKind.POOL_FULL: FailurePolicy(
            503, "service_unavailable", False, "no free connection to the backend in time"
        ),
    }
)


def policy_of(kind: FailureKind) -> FailurePolicy:
    return FAILURES[kind]
