"""The upstream room: the HTTP/1.1 client to backends. Imports nothing else of gateway/.

Public face: `Transport` and `ResponseStream` (transport.py), `UpstreamRequest`,
the typed failures (errors.py), and `UpstreamPool`, the one implementation.
"""

from gateway.upstream.errors import (
    ConnectFailed,
    Disconnected,
    InvalidResponse,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.upstream.pool import UpstreamPool
from gateway.upstream.transport import ResponseStream, Transport, UpstreamRequest

__all__ = [
    "ConnectFailed",
    "Disconnected",
    "InvalidResponse",
    "ResponseStream",
    "Transport",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamRequest",
    "UpstreamTimeout",
]
