"""What passes between client and backend: headers both ways, a whole answer, a stream.

The connections themselves are the upstream room's (shared/upstream/).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send

from gateway.accounting import metrics
from gateway.accounting.attempt import Attempt, StreamOutcome
from gateway.accounting.usage import extract_model, extract_usage
from gateway.proxy.client_watch import ClientWatch
from gateway.routing.policy import Backend
from gateway.translate.table import StreamTranslator
from shared.errors import error_body
from shared.failures import FailureKind, policy_of
from shared.upstream import InvalidResponse, ResponseStream, UpstreamError, UpstreamTimeout
from shared.upstream.trace import TraceContext

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
AFTER_END_SECONDS = 0.5  # how long a backend's end is awaited after the client's answer
MAX_EVENT_BYTES = 8 * 1024 * 1024  # one unfinished server-sent event held back, at most
USAGE_TAIL_BYTES = 16 * 1024

# The backend's response headers a client may see: what describes the body, and
# what OpenAI-style clients read (rate limits, processing time). Nothing else:
# not its CORS headers (a second Access-Control-Allow-Origin makes browsers
# refuse the answer), cookies, Server, Location or hop-by-hop headers. Lengths
# are recomputed. Content-Encoding is kept: we ask for identity, but a backend
# that compresses anyway sends bytes that only its header explains.
RELAYED_RESPONSE_HEADERS = frozenset(
    {
        b"content-type",
        b"content-encoding",
        b"content-language",
        b"content-disposition",
        b"cache-control",
        b"retry-after",
    }
)
RELAYED_RESPONSE_PREFIXES = (b"openai-", b"x-ratelimit-", b"anthropic-ratelimit-")


def upstream_headers(
    backend: Backend,
    content_type: str | None,
    request_id: str,
    trace: TraceContext | None = None,
) -> dict[str, str]:
    """What the backend sees: never the client's own credentials or cookies."""
    headers = {
        "Content-Type": content_type or "application/json",
        "Accept-Encoding": "identity",  # bytes pass through unchanged
        "User-Agent": "multiverse-gateway",
        "X-Request-ID": request_id,
    }
    if trace is not None:
        headers["traceparent"] = trace.traceparent
        if trace.tracestate:
            headers["tracestate"] = trace.tracestate
    if backend.api_key:
        headers["Authorization"] = f"Bearer {backend.api_key}"
    return headers


def relayed_headers(
    upstream: Iterable[tuple[bytes, bytes]], backend_id: str
) -> list[tuple[bytes, bytes]]:
    """The backend's headers (names lower-case) worth passing on, plus who answered."""
    headers = [
        (name, value)
        for name, value in upstream
        if name in RELAYED_RESPONSE_HEADERS or name.startswith(RELAYED_RESPONSE_PREFIXES)
    ]
    headers.append((b"x-gateway-server-id", backend_id.encode()))
    return headers


def has_no_body(status: int) -> bool:
    """1xx, 204 and 304 answers have no body, and so no Content-Length (RFC 9110 8.6)."""
    return status < 200 or status in (204, 304)


class BufferedResponse:
    """A complete upstream answer, relayed with its status and useful headers."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        if has_no_body(status):
            self.headers, self.body = headers, b""
        else:
            self.headers = [*headers, (b"content-length", str(len(body)).encode())]
            self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n", b"\r\n\n")


def complete_events_end(data: bytes) -> int:
    """Where the last complete server-sent event in `data` ends (0: none is complete).

    An event ends with an empty line; a line ends with CRLF, LF or CR."""
    end = 0
    for blank_line in _EVENT_ENDS:
        found = data.rfind(blank_line)
        if found >= 0:
            end = max(end, found + len(blank_line))
    return end


def sse_error_event(failure: UpstreamError) -> bytes:
    """The OpenAI-shaped error event that ends a stream the backend broke."""
    policy = policy_of(failure.kind)
    message = f"the backend failed mid-stream: {failure.reason}"
    body = error_body(policy.status, message, policy.error_type)
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def named_sse_error_event(
    shape: Callable[[int, str], dict[str, Any]],
) -> Callable[[UpstreamError], bytes]:
    """The error event of an API whose clients read only events named `error` in its
    own shape (Anthropic's SDK passes over OpenAI's unnamed one, and a cut stream would
    look finished to it)."""

    def event(failure: UpstreamError) -> bytes:
        body = shape(
            policy_of(failure.kind).status, f"the backend failed mid-stream: {failure.reason}"
        )
        return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"

    return event


def complete_lines_end(data: bytes) -> int:
    """Where the last complete line of an NDJSON stream (Ollama's) ends (0: none is)."""
    return data.rfind(b"\n") + 1


def ndjson_error_line(failure: UpstreamError) -> bytes:
    """The line that ends an NDJSON stream the backend broke, in Ollama's error shape."""
    return (
        json.dumps({"error": f"the backend failed mid-stream: {failure.reason}"}).encode() + b"\n"
    )


@dataclass(frozen=True)
class StreamFormat:
    """How a streamed body divides into records, and how a break is told to the client."""

    complete_end: Callable[[bytes], int]
    error_record: Callable[[UpstreamError], bytes]


SSE = StreamFormat(complete_events_end, sse_error_event)
NDJSON = StreamFormat(complete_lines_end, ndjson_error_line)
# The streamed answers relayed record by record, by their content type.
STREAM_FORMATS = {"text/event-stream": SSE, "application/x-ndjson": NDJSON}


def stream_format_of(
    content_type: str | None, shape: Callable[[int, str], dict[str, Any]] | None
) -> StreamFormat | None:
    """How a backend's stream is relayed: by its content type, and an SSE stream's break
    told in the shape of the API the client spoke (`shape`; None: OpenAI's)."""
    stream_format = STREAM_FORMATS.get(content_type or "")
    if stream_format is SSE and shape is not None:
        return StreamFormat(complete_events_end, named_sse_error_event(shape))
    return stream_format


class EventReader:
    """Reads an upstream stream as whole records (SSE events, NDJSON lines): a partial
    record is held back until its end arrives, so a break never leaves half of one
    with the client.

    A record trickled in many chunks costs its size, not its size times the number of
    chunks: each chunk is searched once (with the few held bytes a record's end may
    begin in), and the held chunks are joined once, when the record ends.
    """

    # A record's end (the longest: CRLF CRLF) may begin this many bytes before the
    # chunk that completes it; every format's ends are among the SSE ones.
    CARRY = max(len(blank_line) for blank_line in _EVENT_ENDS) - 1

    def __init__(self, upstream: ResponseStream, stream_format: StreamFormat = SSE) -> None:
        self.upstream = upstream
        self.format = stream_format
        # The unfinished record's chunks (no record ends in them), and their last bytes.
        self._held: list[bytes] = []
        self._held_size = 0
        self._held_tail = b""

    async def read(self, deadline: float | None = None, *, idle: float | None = None) -> bytes:
        """The next run of complete events; b"" at the end of the body.

        A body that ends cleanly with an unfinished event passes it on as it is
        (its bytes are the backend's; a client ignores an unfinished event)."""
        while True:
            chunk = await self.upstream.read_chunk(deadline, idle=idle)
            if not chunk:
                rest = b"".join(self._held)
                self._release_held()
                return rest
            if run := self._add(chunk):
                return run

    def _add(self, chunk: bytes) -> bytes:
        """The records `chunk` completes, joined with the held start of the first (b""
        when it completes none); what follows the last is held."""
        tail = self._held_tail
        found = self.format.complete_end(tail + chunk if tail else chunk)
        if not found:
            self._hold(chunk)
            return b""
        end = self._held_size - len(tail) + found
        data = b"".join([*self._held, chunk]) if self._held else chunk
        self._release_held()
        if end < len(data):
            self._hold(data[end:])
            return data[:end]
        return data

    def _hold(self, data: bytes) -> None:
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size > MAX_EVENT_BYTES:
            raise InvalidResponse("a streamed event is too large", FailureKind.TOO_LARGE)
        carry = self.CARRY
        self._held_tail = data[-carry:] if len(data) >= carry else (self._held_tail + data)[-carry:]

    def _release_held(self) -> None:
        self._held = []
        self._held_size = 0
        self._held_tail = b""


class RelayedStream:
    """An ASGI response that relays an upstream SSE stream, whole events as they arrive.

    Headers and the first events were already received (so a backend that
    failed before its first event was failed over). Afterwards: a broken or
    silent backend ends the stream with an OpenAI-shaped SSE error event after
    the last whole event; a client that leaves (the ClientWatch cancels the
    request's task) closes the upstream connection at once.
    """

    def __init__(
        self,
        events: EventReader,
        first_events: bytes,
        *,
        headers: list[tuple[bytes, bytes]],
        idle_timeout: float,
        attempt: Attempt,
        watch: ClientWatch,
        held: AsyncExitStack,
        rewrite: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.events = events
        # What ends the client's stream in another API's shape (a translated stream's
        # last records, or its error record after a break); None: the events' own.
        self.closing: Callable[[UpstreamError | None], bytes] | None = None
        # Once it is done, the client's stream ends (the backend's rest is not awaited:
        # a backend silent or broken after its [DONE] is not the client's to wait for).
        self.ends: StreamTranslator | None = None
        self.over = False  # it was: the backend's rest is drained after the client's end
        # The attempt's slot and the backend's answer, handed over by the Forwarder:
        # released (or the connection closed, when the stream did not end) on leaving.
        self.held = held
        # Applied to whole events before the client gets them (the gateway's own usage
        # request taken out); the usage is read from what the backend sent.
        self.rewrite = rewrite
        self.last_event_at: float | None = None
        self.upstream = events.upstream
        self.first_events = first_events
        self.headers = headers
        self.idle_timeout = idle_timeout
        self.attempt = attempt
        self.watch = watch
        self.outcome = StreamOutcome()
        # The last chunks, about USAGE_TAIL_BYTES of them: the usage is in the last event.
        self.tail: deque[bytes] = deque()
        self.tail_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.held:  # leaving: an unfinished answer's connection is closed
            try:
                await self._pump(send)
            finally:
                self.outcome.client_gone = self.outcome.client_gone or self.watch.gone
                if self.outcome.client_gone:
                    self.outcome.failure = None  # we closed it: not the backend's fault
                tail = b"".join(self.tail)
                self.outcome.usage = extract_usage(tail)
                self.outcome.named = extract_model(tail, last=True)
                self.attempt.streamed(self.outcome)
            if self.over:  # (settled first: the drain is no part of the answer's time)
                await self._drain()

    def _remember(self, chunk: bytes) -> None:
        self.tail.append(chunk)
        self.tail_bytes += len(chunk)
        while self.tail_bytes - len(self.tail[0]) >= USAGE_TAIL_BYTES:
            self.tail_bytes -= len(self.tail.popleft())

    async def _send_events(self, send: Send, events: bytes) -> None:
        now = time.perf_counter()
        if self.last_event_at is not None:
            metrics.RECORDER.gap(self.attempt.model, now - self.last_event_at)
        self.last_event_at = now
        if self.rewrite is not None:
            events = self.rewrite(events)
            if not events:
                return
        await send({"type": "http.response.body", "body": events, "more_body": True})

    async def _pump(self, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.upstream.status,
                    "headers": self.headers,
                }
            )
            self._remember(self.first_events)
            await self._send_events(send, self.first_events)
            while True:
                if self.ends is not None and self.ends.done:
                    self.outcome.completed = self.over = True
                    break
                try:
                    chunk = await self.events.read(idle=self.idle_timeout)
                except UpstreamTimeout:
                    self.outcome.failure = UpstreamTimeout(
                        f"the stream was silent for {self.idle_timeout:g}s"
                    )
                    break
                except UpstreamError as error:
                    self.outcome.failure = error
                    break
                if not chunk:
                    self.outcome.completed = True
                    break
                self._remember(chunk)
                await self._send_events(send, chunk)
            self.watch.stop()
            if self.closing is not None:
                if last := self.closing(self.outcome.failure):
                    await send({"type": "http.response.body", "body": last, "more_body": True})
                self._failed_in_translation()
            elif self.outcome.failure is not None:
                event = self.events.format.error_record(self.outcome.failure)
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            self.outcome.client_gone = True

    def _failed_in_translation(self) -> None:
        """A translated answer the client was told failed (cut short, or the backend's
        error event in it) is the backend's failure, not a completed answer."""
        ends = self.ends
        if ends is not None and ends.failure is not None and self.outcome.failure is None:
            self.outcome.failure = UpstreamError(FailureKind.TRUNCATED, ends.failure)

    async def _drain(self) -> None:
        """The backend's own end after the client's answer ended, read for a moment so
        that its connection is reused (its last chunk comes right after [DONE]); a
        backend still silent or talking by then has its connection closed on leaving."""
        deadline = asyncio.get_running_loop().time() + AFTER_END_SECONDS
        try:
            while await self.events.read(deadline):
                pass
        except UpstreamError:
            pass
