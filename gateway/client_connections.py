"""Client connections: uvicorn's httptools protocol, with the limits it does not have.

uvicorn accepts request heads of any size (five unfinished 20 MB heads held
130 MB), waits forever for a head that trickles in a byte a minute, and has
no cap on connections. Like nginx (`large_client_header_buffers`,
`client_header_timeout`, `limit_conn`), the gateway refuses, with an
OpenAI-shaped error and `Connection: close`:

- a request head (request line and headers) over MAX_HEAD_BYTES: 431;
- a head not complete HEADER_TIMEOUT_SECONDS after the connection opened or
  the request began: 408;
- a connection beyond MAX_CONNECTIONS open in this worker: 503.

Everything else is uvicorn's own code path. This subclasses uvicorn's
protocol (its attributes are uvicorn's internals: tests/gateway/
test_client_connections.py runs them against the real server).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from shared.errors import error_body
from shared.logging import get_logger

MAX_HEAD_BYTES = 64 * 1024
LINGER_SECONDS = 2.0
SWEEP_SECONDS = 1.0

log = get_logger("api")

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Unavailable"}


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    max_connections: int
    max_head_bytes: int = MAX_HEAD_BYTES


class HeadTimeouts:
    """One timer per worker instead of one per request (a timer armed and cancelled
    on every request cost a few µs of each): every second it looks at the
    connections still reading a head and refuses those past the timeout."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.watched: set[GuardedProtocol] = set()
        self.handle: asyncio.TimerHandle | None = None

    def watch(self, protocol: GuardedProtocol) -> None:
        self.watched.add(protocol)
        if self.handle is None:
            self.handle = protocol.loop.call_later(SWEEP_SECONDS, self._sweep, protocol.loop)

    def forget(self, protocol: GuardedProtocol) -> None:
        self.watched.discard(protocol)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self.handle = None
        now = loop.time()
        for protocol in list(self.watched):
            if protocol.reading_head and now - protocol.head_started > self.timeout:
                protocol.head_too_slow()
        if self.watched:
            self.handle = loop.call_later(SWEEP_SECONDS, self._sweep, loop)


class ConnectionGuard:
    """The limits, and the per-worker state they need (built in each worker's process)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._timeouts: HeadTimeouts | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"limits": self.limits, "_timeouts": None}  # a worker starts its own

    @property
    def timeouts(self) -> HeadTimeouts:
        if self._timeouts is None:
            self._timeouts = HeadTimeouts(self.limits.header_timeout)
        return self._timeouts


def refusal(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 answer in the OpenAI error shape, closing the connection."""
    body = json.dumps(error_body(status, message)).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {_REASONS[status].decode()}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n"
    )
    return head.encode() + body


class HeadCycle(RequestResponseCycle):
    """uvicorn's request cycle, writing a response's head with one check of all its
    header names and one of all its values, instead of two per header (a class of bytes
    is found in the names joined as in each name), and, when no header is one uvicorn
    acts on but a single content-length, in one join: uvicorn's loop over a head of a
    dozen headers (a keyed answer has nine x-ratelimit-* ones) was about a µs a
    header. Anything else (a body, a head that fails the check, an access log, a
    paused or lost client) is uvicorn's own code; tests/gateway/
    test_client_connections.py compares the heads both write, byte for byte."""

    async def send(self, message: Any) -> None:
        if (
            message["type"] != "http.response.start"
            or self.response_started
            or self.disconnected
            or self.flow.write_paused
            or self.access_log
        ):
            await super().send(message)
            return
        headers = [*self.default_headers, *message.get("headers", ())]
        names = b"".join([name for name, _ in headers])
        if HEADER_RE.search(names) or HEADER_VALUE_RE.search(
            b"".join([value for _, value in headers])
        ):
            await super().send(message)  # uvicorn's own error for the bad one
            return
        # The usual head: names already as uvicorn writes them, and none it reads but
        # one content-length at most: written in one join, not a header at a time.
        one_join = (
            names.islower()
            and b"transfer-encoding" not in names
            and b"connection" not in names
            and names.count(b"content-length") <= 1
        )
        length = None
        if one_join and b"content-length" in names:
            try:
                length = dict(headers).get(b"content-length")
            except TypeError:  # a name that is a bytearray: uvicorn's loop takes it
                one_join = False
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        has_connection_close = False
        if one_join:
            if length is not None and self.chunked_encoding is None:
                self.expected_content_length = int(length.decode())
                self.chunked_encoding = False
            content = [STATUS_LINE[status_code], b"\r\n".join(map(b": ".join, headers))]
            if headers:
                content.append(b"\r\n")
        else:
            content = [STATUS_LINE[status_code]]
            has_connection_close = self._each_header(headers, content)
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status_code not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))

    def _each_header(self, headers: list[tuple[bytes, bytes]], content: list[bytes]) -> bool:
        """uvicorn's loop over a head's headers: the state they set, their lines added
        to `content`; whether one said Connection: close."""
        has_connection_close = False
        for raw_name, value in headers:
            name = raw_name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
                if b"close" in connection:
                    self.keep_alive = False
                    has_connection_close = True
            content += (name, b": ", value, b"\r\n")
        return has_connection_close


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


class GuardedProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = guard.limits
        self.timeouts = guard.timeouts
        self.reading_head = True
        self.head_started = self.loop.time()
        self.head_bytes = 0  # raw bytes received while the head is incomplete
        self.refused = False

    # -- connections ------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                503,
                f"this gateway worker has {self.limits.max_connections} connections open "
                "(MAX_CONNECTIONS); retry shortly",
                {"Retry-After": "1"},
            )
            return
        self.head_started = self.loop.time()
        self.timeouts.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.timeouts.forget(self)
        super().connection_lost(exc)

    # -- the head -------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.reading_head:
            self.head_bytes += len(data)
        super().data_received(data)
        if self.reading_head and self.head_bytes > self.limits.max_head_bytes:
            self._refuse(431, f"the request head is larger than {self.limits.max_head_bytes} bytes")

    def on_response_complete(self) -> None:
        # Idle until the next request begins: uvicorn's keep-alive timeout closes an
        # idle connection silently; the head timeout starts with the next request.
        self.reading_head = False
        self.head_bytes = 0
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        if self.refused:  # our refusal stopped the parser: the answer is already sent
            return
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        self.reading_head = True
        self.head_started = self.loop.time()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.reading_head = False
        # The raw count may include body bytes that came with the head; only when it
        # is over the limit is the head itself measured.
        if self.head_bytes > self.limits.max_head_bytes and self._head_size() > (
            self.limits.max_head_bytes
        ):
            self._refuse(431, f"the request head is larger than {self.limits.max_head_bytes} bytes")
            raise _Refused  # stops the parser (uvicorn's data_received answers nothing more)
        self.head_bytes = 0
        super().on_headers_complete()
        # The cycle's task has not run yet: its first look at `send` finds HeadCycle's.
        if type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = HeadCycle

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    # -- refusals ---------------------------------------------------------------------
    def head_too_slow(self) -> None:
        if not self.refused and not self.transport.is_closing():
            self._refuse(
                408,
                f"the request head did not arrive within {self.limits.header_timeout:g}s "
                "(HEADER_TIMEOUT_SECONDS)",
            )

    def _refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        if self.refused:
            return
        self.refused = True
        self.timeouts.forget(self)
        log.warning("connection refused", status=status, reason=message)
        if self.transport.is_closing():
            return
        self.transport.write(refusal(status, message, headers))
        # A lingering close, as nginx does: closing with unread data would send a
        # reset that can destroy the answer before the client reads it. Send FIN
        # after the answer, read and drop what still comes, close after a moment.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
