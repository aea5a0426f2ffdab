"""One exchange on one keep-alive connection: an asyncio protocol, parsed by httptools.

Why not a general-purpose client: bare proxies measured in one run forwarded
several times more requests through this design than through aiohttp's
ClientSession, pyreqwest or httpx (the README's Performance section has the
figures). The proxy needs a small part of a general client: one request with
a byte body, an answer read whole or relayed chunk by chunk, timeouts,
keep-alive, TLS. Parsing is httptools (llhttp, the parser uvicorn itself
uses, strict about framing: both length headers, duplicate or invalid
lengths are refused); what is left here is feeding it and reading the
answer. Connections are made and kept by pool.py; failures are
shared/upstream/errors.py's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import NoReturn, cast

import httptools

from shared.failures import FailureKind
from shared.upstream.errors import Disconnected, InvalidResponse, UpstreamError, UpstreamTimeout
from shared.upstream.framing import Origin

MAX_HEADER_BYTES = 64 * 1024
# Read no further ahead of a slow client than this; reading resumes once it took it all.
PAUSE_ABOVE_BYTES = 256 * 1024


class UpstreamResponse:
    """An answer whose status and headers arrived; its body is read whole or chunk by chunk.

    Finish with `release()` (the connection may serve another request) or
    `close()` (abort: the backend sees the connection drop and stops).
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._loop = connection.loop
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_type: str | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.headers_done = False
        self.complete = False
        self.error: UpstreamError | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        # For read_chunk(idle=...): when data last came, or a wait for it began.
        self._active_at = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- fed by the connection ------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if not self.complete and self.error is None:
            self.error = error
            self._wake()

    def _body(self, data: bytes) -> None:
        self._active_at = self._loop.time()
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > PAUSE_ABOVE_BYTES:
            self._connection.pause()
        self._wake()

    # -- read by the proxy ----------------------------------------------------
    async def _wait(self, deadline: float | None, what: str) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = None if deadline is None else self._loop.call_at(deadline, _expire, waiter, what)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def _wait_idle(self, idle: float) -> None:
        """Wait for data, failing once none came for `idle` seconds.

        One timer per response, re-armed only when it fires early: a stream of
        many chunks costs a float per chunk instead of a timer per chunk.
        """
        waiter = self._loop.create_future()
        self._waiter = waiter
        self._active_at = self._loop.time()
        if self._idle_timer is None:
            self._idle_timer = self._loop.call_at(self._active_at + idle, self._check_idle, idle)
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_idle(self, idle: float) -> None:
        self._idle_timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # not waiting now; the next wait arms a new timer
        due = self._active_at + idle
        if self._loop.time() >= due:
            waiter.set_exception(UpstreamTimeout(f"no data for {idle:g}s"))
        else:
            self._idle_timer = self._loop.call_at(due, self._check_idle, idle)

    def _stop_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    async def wait_headers(self, deadline: float | None) -> None:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait(deadline, "timed out waiting for the answer")

    async def read_chunk(
        self, deadline: float | None = None, *, idle: float | None = None
    ) -> bytes:
        """What arrived since the last call (waiting for something); b"" at the end.

        Waits until `deadline` (loop time), or while data keeps coming at most
        `idle` seconds apart.
        """
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            if idle is not None:
                await self._wait_idle(idle)
            else:
                await self._wait(deadline, "timed out waiting for data")
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        self._connection.resume()
        return data

    async def read_all(self, limit: int, deadline: float | None) -> bytes:
        if (self.content_length or 0) > limit:
            raise InvalidResponse("the response is too large", FailureKind.TOO_LARGE)
        parts: list[bytes] = []
        size = 0
        while chunk := await self.read_chunk(deadline):
            size += len(chunk)
            if size > limit:
                raise InvalidResponse("the response is too large", FailureKind.TOO_LARGE)
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        self._connection.finished(self, reusable=self.complete)

    def close(self) -> None:
        self._fail(Disconnected(FailureKind.RESET, "the request was abandoned"))
        self._connection.finished(self, reusable=False)


def _expire(waiter: asyncio.Future[None], what: str) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout(what))


class Connection(asyncio.Protocol):
    """One keep-alive connection to a backend, carrying one request at a time.

    `on_idle` is called when it finished an exchange and may carry another
    (the pool keeps it); otherwise it is closed. `on_closed` is called once,
    when the connection is gone.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: Origin,
        on_idle: Callable[[Connection], None],
        on_closed: Callable[[Origin], None] | None = None,
    ) -> None:
        self.loop = loop
        self.on_idle = on_idle
        self.on_closed = on_closed
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.paused = False
        self.keep_alive = True
        self.header_bytes = 0  # raw bytes until the head is complete
        self.field_bytes = 0  # header (then trailer) names and values, as parsed
        self.refusal: InvalidResponse | None = None
        self.head_request = False
        self.fresh = True  # has not carried an exchange yet
        self.eof = False  # the backend ended its side cleanly (FIN, or TLS close_notify)
        self.idle_until = 0.0  # loop time; set by the pool
        self.keep_alive_header: bytes | None = None  # the last answer's Keep-Alive

    # -- asyncio.Protocol -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response.complete:  # nothing (more) asked: a confused backend
            self.abort()
            return
        if not response.headers_done:
            self.header_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            # A callback's refusal stops the parser with an error of its own; an
            # upgrade nobody asked for is as wrong as bad framing.
            response._fail(
                self.refusal or InvalidResponse("the backend sent an invalid HTTP response")
            )
            self.abort()
            return
        # httptools gathers a header until it ends: bound what an endless one takes.
        if not response.headers_done and self.header_bytes > MAX_HEADER_BYTES:
            response._fail(InvalidResponse("the response headers are too large"))
            self.abort()

    def eof_received(self) -> bool | None:
        self.eof = True
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_closed is not None:
            on_closed, self.on_closed = self.on_closed, None
            on_closed(self.origin)
        response = self.response
        if response is None or response.complete:
            return
        if not response.headers_done:
            response._fail(
                Disconnected(
                    FailureKind.RESET,
                    "the backend closed the connection",
                )
            )
            return
        if response.content_length is None and not response.chunked and self.eof and exc is None:
            # A body without length or chunking ends where the connection does, when
            # it ends cleanly: a FIN, or over TLS a close_notify (eof_received). A
            # reset, or a TCP close under TLS without close_notify, cut it short.
            response.complete = True
            response._wake()
            return
        response._fail(Disconnected(FailureKind.TRUNCATED, "the backend's response broke off"))

    # -- httptools callbacks ------------------------------------------------------
    def _refuse(self, reason: str) -> NoReturn:
        """Stop the parser from a callback; data_received fails the response with this."""
        self.refusal = InvalidResponse(reason)
        raise self.refusal

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        assert response is not None
        self.field_bytes += len(name) + len(value) + 4
        if not response.headers_done:
            if self.field_bytes > MAX_HEADER_BYTES:
                self._refuse("the response headers are too large")
            response.headers.append((name.lower(), value))
        elif self.field_bytes > MAX_HEADER_BYTES:  # trailers: not relayed, bounded the same
            self._refuse("the response trailers are too large")

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        if status == 101:
            self._refuse("the backend switched protocols")
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            response.headers.clear()
            self.field_bytes = 0
            return
        response.status = status
        for name, value in response.headers:
            if name == b"content-type":
                response.content_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                response.content_length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                response.chunked = True
            elif name == b"keep-alive":
                self.keep_alive_header = value
        response.headers_done = True
        self.field_bytes = 0  # from here on, trailers
        if self.head_request:  # the answer to HEAD has no body, whatever its length says
            self.keep_alive = False
            response.complete = True
        response._wake()

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._body(body)

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        if not response.headers_done:  # end of an interim answer
            return
        self.keep_alive = self.parser.should_keep_alive()
        response.complete = True
        response._wake()

    # -- used by the pool and the response --------------------------------------------
    def send(self, request: bytes, *, head: bool = False) -> UpstreamResponse:
        assert self.transport is not None
        response = self.response = UpstreamResponse(self)
        self.header_bytes = 0
        self.field_bytes = 0
        self.refusal = None
        self.head_request = head
        self.keep_alive_header = None
        if self.closed or self.transport.is_closing():
            response._fail(
                Disconnected(FailureKind.RESET, "the connection was closed", unsent=True)
            )
            return response
        try:
            self.transport.write(request)
        except RuntimeError:  # uvloop: the transport closed under us (asyncio just drops it)
            response._fail(
                Disconnected(FailureKind.RESET, "the connection was closed", unsent=True)
            )
        return response

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def finished(self, response: UpstreamResponse, *, reusable: bool) -> None:
        if response is not self.response:
            return
        response._stop_timer()
        self.response = None
        if reusable and self.keep_alive and not self.closed and not self.paused:
            self.on_idle(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
