"""The upstream room: the HTTP/1.1 client to backends, for the proxy and the probe.

Public face: `Transport` and `ResponseStream` (transport.py), `UpstreamRequest`,
the typed failures (errors.py), and `UpstreamPool`, the one implementation.
It lives in shared/ because gateway and healthd both contact backends through
it, and it imports nothing of either.
"""

from shared.upstream.errors import (
    ConnectFailed,
    Disconnected,
    FailedStatus,
    InvalidResponse,
    PoolTimeout,
    UpstreamError,
    UpstreamTimeout,
    is_failed_status,
)
from shared.upstream.pool import UpstreamPool, probe_transport
from shared.upstream.transport import ResponseStream, Transport, UpstreamRequest

__all__ = [
    "ConnectFailed",
    "Disconnected",
    "FailedStatus",
    "InvalidResponse",
    "PoolTimeout",
    "ResponseStream",
    "Transport",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamRequest",
    "UpstreamTimeout",
    "is_failed_status",
    "probe_transport",
]
