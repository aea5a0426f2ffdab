"""The OpenAI-compatible proxy: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

The body goes to the backend byte for byte; it is parsed only to read `model`
and `stream`. Backends come from the in-memory snapshot (no database I/O
here); what the request teaches us (usage, failures) is buffered in Feedback.
A backend that fails before the client got a byte is failed over.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from gateway.json_bodies import parse_json_object, validate
from gateway.proxy.access import ClientAccess
from gateway.proxy.feedback import Feedback
from gateway.proxy.relay import (
    MAX_RESPONSE_BYTES,
    RelayedStream,
    StreamOutcome,
    UpstreamFailure,
    extract_usage,
    relayed_headers,
    upstream_headers,
)
from gateway.proxy.request_log import RequestLog
from gateway.routing.balancer import Balancer
from gateway.routing.policy import Backend, parse_tags
from gateway.routing.registry import SnapshotHolder
from gateway.upstream.connection import UpstreamError, UpstreamResponse, UpstreamTimeout
from gateway.upstream.pool import UpstreamPool
from shared.errors import GatewayTimeout, InvalidRequest, NotFound, ServiceUnavailable
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger("api")


MAX_MODEL_NAME = 256


class ProxiedRequest(BaseModel):
    """What the gateway reads of an OpenAI request; every other field passes through untouched."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(
        min_length=1, max_length=MAX_MODEL_NAME, description="Which model to route to."
    )
    stream: bool = Field(False, description="Stream the answer as server-sent events.")


@dataclass
class ProxyRuntime:
    """The proxy's moving parts, built per app (see app.py)."""

    settings: Settings
    holder: SnapshotHolder
    balancer: Balancer
    feedback: Feedback
    access: ClientAccess
    request_log: RequestLog
    pool: UpstreamPool | None = None


class BufferedResponse:
    """A complete upstream answer, relayed with its status and useful headers."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = [*headers, (b"content-length", str(len(body)).encode())]
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def parse_proxied(body: bytes) -> ProxiedRequest:
    """Read `model` and `stream`; the body itself is forwarded untouched."""
    document = parse_json_object(body, empty_hint="send a JSON object with a model")
    model, stream = document.get("model"), document.get("stream", False)
    if type(model) is str and 0 < len(model) <= MAX_MODEL_NAME and type(stream) is bool:
        # The usual request, checked without pydantic (a few µs on every request);
        # anything else is validated in full, for the exact error message.
        return ProxiedRequest.model_construct(model=model, stream=stream)
    if "model" not in document:
        raise InvalidRequest("you must provide a model parameter", param="model")
    return validate(ProxiedRequest, {"model": model, "stream": stream})


@dataclass(frozen=True)
class Incoming:
    """What the proxy needs of a client request (read once by the endpoint)."""

    path: str
    body: bytes
    content_type: str | None
    tags_header: str | None
    request_id: str


class Forwarder:
    """One client request: pick, try, fail over, answer."""

    def __init__(self, runtime: ProxyRuntime, incoming: Incoming) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.incoming = incoming
        self.loop = asyncio.get_running_loop()
        # Deadlines on the loop's clock (uvloop's ticks in milliseconds), latency on a fine one.
        self.started = self.loop.time()
        self.started_precise = time.perf_counter()
        self.deadline = self.started + self.settings.request_timeout_seconds

    async def run(self, target: ProxiedRequest) -> RelayedStream | BufferedResponse:
        runtime = self.runtime
        if not runtime.holder.current.backends(target.model):
            available = sorted(runtime.holder.current.by_model)
            raise NotFound(
                f"model {target.model!r} not found; available models: "
                f"{', '.join(available) if available else 'none registered'}",
                param="model",
            )
        tags = parse_tags(self.incoming.tags_header)
        tried: list[str] = []
        failures: list[str] = []
        attempts = 1 + self.settings.max_retry_attempts
        queue_deadline = self.started + self.settings.queue_timeout_seconds
        while len(tried) < attempts and self.loop.time() < self.deadline:
            backends = runtime.holder.current.backends(target.model)
            backend = runtime.balancer.pick(
                backends,
                required_tags=tags,
                exclude=frozenset(tried) | runtime.feedback.suspended_ids(),
                streaming=target.stream,
            )
            if backend is None:
                remaining = queue_deadline - self.loop.time()
                if not tried and remaining > 0:
                    await runtime.holder.wait_for_change(min(remaining, 0.5))
                    continue
                if not tried:
                    reason = runtime.balancer.explain(
                        backends, required_tags=tags, streaming=target.stream
                    )
                    raise ServiceUnavailable(
                        f"model {target.model!r} is unavailable: {reason}",
                        headers={"Retry-After": "5"},
                    )
                break
            tried.append(backend.id)
            try:
                return await self.attempt(backend, target)
            except UpstreamFailure as failure:
                failures.append(failure.reason)
                self.note_failure(backend, failure)
        if not failures:
            limit = self.settings.request_timeout_seconds
            raise GatewayTimeout(f"no answer within REQUEST_TIMEOUT_SECONDS ({limit:g}s)")
        raise GatewayTimeout(
            f"all {len(tried)} attempt(s) for model {target.model!r} failed; last: {failures[-1]}"
        )

    def note_failure(self, backend: Backend, failure: UpstreamFailure) -> None:
        feedback = self.runtime.feedback
        feedback.record(backend.id, ok=False, latency_ms=self.elapsed_ms())
        if failure.backend_fault:
            feedback.mark_unhealthy(backend.id, failure.reason)
        log.warning(
            "backend attempt failed",
            registration_id=backend.id,
            model=backend.model_name,
            reason=failure.reason,
        )

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started_precise) * 1000, 2)

    async def _send(self, backend: Backend, stream: bool) -> UpstreamResponse:
        pool = self.runtime.pool
        assert pool is not None
        incoming = self.incoming
        headers = upstream_headers(backend, incoming.content_type, incoming.request_id)
        url, path, body = backend.base_url, incoming.path, incoming.body
        # A stream's headers may take at most STREAM_IDLE_TIMEOUT_SECONDS, like its chunks.
        deadline = self.deadline
        if stream:
            deadline = min(deadline, self.loop.time() + self.settings.stream_idle_timeout_seconds)
        try:
            return await pool.post(url, path, headers, body, deadline)
        except UpstreamError as error:
            raise UpstreamFailure(error.reason) from None

    async def attempt(
        self, backend: Backend, target: ProxiedRequest
    ) -> BufferedResponse | RelayedStream:
        balancer = self.runtime.balancer
        balancer.started(backend.id)
        handed_over = False
        upstream: UpstreamResponse | None = None
        try:
            upstream = await self._send(backend, target.stream)
            status = upstream.status
            if status >= 500 or status == 429:
                raise UpstreamFailure(f"HTTP {status}", backend_fault=status != 429)
            headers = relayed_headers(upstream.headers, backend.id)
            if status == 200 and upstream.content_type == "text/event-stream":
                first = await self._first_chunk(upstream)
                handed_over = True
                return RelayedStream(
                    upstream,
                    first,
                    headers=headers,
                    idle_timeout=self.settings.stream_idle_timeout_seconds,
                    on_done=lambda outcome: self.stream_done(backend, target, outcome),
                )
            data = await self._read_all(upstream)
            latency = self.elapsed_ms()
            balancer.finished(backend.id, latency if status < 400 else None)
            handed_over = True
            usage = extract_usage(data) if status < 400 else None
            self.runtime.feedback.record(
                backend.id,
                ok=True,
                latency_ms=latency,
                usage=usage,
            )
            self.runtime.request_log.served(
                self.incoming.request_id,
                model=target.model,
                registration_id=backend.id,
                status=status,
                latency_ms=latency,
                stream=False,
            )
            return BufferedResponse(status, headers, data)
        finally:
            if not handed_over:
                balancer.finished(backend.id, None)
                if upstream is not None:  # failed or cancelled half-way: drop the connection
                    upstream.close()

    async def _first_chunk(self, upstream: UpstreamResponse) -> bytes:
        deadline = min(self.deadline, self.loop.time() + self.settings.stream_idle_timeout_seconds)
        try:
            chunk = await upstream.read_chunk(deadline)
        except UpstreamTimeout:
            raise UpstreamFailure("timed out waiting for the first chunk") from None
        except UpstreamError as error:
            raise UpstreamFailure(error.reason) from None
        if not chunk:
            raise UpstreamFailure("the stream ended before its first event")
        return chunk

    async def _read_all(self, upstream: UpstreamResponse) -> bytes:
        try:
            data = await upstream.read_all(MAX_RESPONSE_BYTES, self.deadline)
        except UpstreamError as error:
            raise UpstreamFailure(error.reason) from None
        upstream.release()
        return data

    def stream_done(self, backend: Backend, target: ProxiedRequest, outcome: StreamOutcome) -> None:
        latency = self.elapsed_ms()
        failed = outcome.failure is not None
        self.runtime.balancer.finished(backend.id, None if failed else latency)
        usage = outcome.usage
        self.runtime.feedback.record(
            backend.id,
            ok=not failed,
            latency_ms=latency,
            usage=usage,
        )
        if failed:
            self.runtime.feedback.mark_unhealthy(backend.id, f"mid-stream: {outcome.failure}")
            log.warning(
                "stream failed mid-way",
                registration_id=backend.id,
                model=target.model,
                reason=outcome.failure,
            )
        else:
            self.runtime.request_log.served(
                self.incoming.request_id,
                model=target.model,
                registration_id=backend.id,
                status=200,
                latency_ms=latency,
                stream=True,
                client_gone=outcome.client_gone,
            )
