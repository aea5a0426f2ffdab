"""What passes between client and backend: headers both ways, a whole answer, a stream.

The connections themselves are the upstream room's (shared/upstream/).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable

from starlette.types import Message, Receive, Scope, Send

from gateway.proxy.accounting import Attempt, StreamOutcome
from gateway.proxy.usage import extract_usage
from gateway.routing.policy import Backend
from shared.errors import error_body
from shared.failures import policy_of
from shared.upstream import ResponseStream, UpstreamError, UpstreamTimeout

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
USAGE_TAIL_BYTES = 16 * 1024

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Never relayed from a backend: hop-by-hop, lengths we recompute, and its identity.
# Content-Encoding is kept: we ask for identity, but a backend that compresses
# anyway sends bytes that only its header explains, and the bytes pass unchanged.
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {
    b"content-length",
    b"server",
    b"date",
    b"set-cookie",
    b"x-gateway-server-id",
    b"x-request-id",
}


def upstream_headers(backend: Backend, content_type: str | None, request_id: str) -> dict[str, str]:
    """What the backend sees: never the client's own credentials or cookies."""
    headers = {
        "Content-Type": content_type or "application/json",
        "Accept-Encoding": "identity",  # bytes pass through unchanged
        "User-Agent": "multiverse-gateway",
        "X-Request-ID": request_id,
    }
    if backend.api_key:
        headers["Authorization"] = f"Bearer {backend.api_key}"
    return headers


def relayed_headers(
    upstream: Iterable[tuple[bytes, bytes]], backend_id: str
) -> list[tuple[bytes, bytes]]:
    """The backend's headers (names lower-case) worth passing on, plus who answered."""
    headers = [(name, value) for name, value in upstream if name not in DROPPED_RESPONSE_HEADERS]
    headers.append((b"x-gateway-server-id", backend_id.encode()))
    return headers


class BufferedResponse:
    """A complete upstream answer, relayed with its status and useful headers."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = [*headers, (b"content-length", str(len(body)).encode())]
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def sse_error_event(failure: UpstreamError) -> bytes:
    """The OpenAI-shaped error event that ends a stream the backend broke."""
    policy = policy_of(failure.kind)
    message = f"the backend failed mid-stream: {failure.reason}"
    body = error_body(policy.status, message, policy.error_type)
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class RelayedStream:
    """An ASGI response that relays an upstream SSE stream as its bytes arrive.

    Headers and the first chunk were already received (so a backend that
    failed before its first byte was failed over). Afterwards: a broken or
    silent backend ends the stream with an OpenAI-shaped SSE error event; a
    client that leaves closes the upstream connection at once.
    """

    def __init__(
        self,
        upstream: ResponseStream,
        first_chunk: bytes,
        *,
        headers: list[tuple[bytes, bytes]],
        idle_timeout: float,
        attempt: Attempt,
    ) -> None:
        self.upstream = upstream
        self.first_chunk = first_chunk
        self.headers = headers
        self.idle_timeout = idle_timeout
        self.attempt = attempt
        self.outcome = StreamOutcome()
        # The last chunks, about USAGE_TAIL_BYTES of them: the usage is in the last event.
        self.tail: deque[bytes] = deque()
        self.tail_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The relay runs in the request's own task; a second one only listens for
        # the client leaving, which closes the upstream and so ends the relay.
        watch = asyncio.ensure_future(self._watch_disconnect(receive))
        try:
            await self._pump(send)
        finally:
            watch.cancel()
            if not self.outcome.completed:
                self.upstream.close()  # abort: the backend stops generating
            else:
                self.upstream.release()
            self.outcome.usage = extract_usage(b"".join(self.tail))
            self.attempt.streamed(self.outcome)

    async def _watch_disconnect(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                self.outcome.client_gone = True
                self.upstream.close()
                return

    def _remember(self, chunk: bytes) -> None:
        self.tail.append(chunk)
        self.tail_bytes += len(chunk)
        while self.tail_bytes - len(self.tail[0]) >= USAGE_TAIL_BYTES:
            self.tail_bytes -= len(self.tail.popleft())

    async def _pump(self, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.upstream.status,
                    "headers": self.headers,
                }
            )
            self._remember(self.first_chunk)
            await send({"type": "http.response.body", "body": self.first_chunk, "more_body": True})
            while True:
                try:
                    chunk = await self.upstream.read_chunk(idle=self.idle_timeout)
                except UpstreamTimeout:
                    self.outcome.failure = UpstreamTimeout(
                        f"the stream was silent for {self.idle_timeout:g}s"
                    )
                    break
                except UpstreamError as error:
                    if not self.outcome.client_gone:  # else: we closed it ourselves
                        self.outcome.failure = error
                    break
                if not chunk:
                    self.outcome.completed = True
                    break
                self._remember(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if self.outcome.client_gone:
                return
            if self.outcome.failure is not None:
                event = sse_error_event(self.outcome.failure)
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            self.outcome.client_gone = True
