"""Forwarding one client request: pick a backend, try it, fail over, answer.

The body goes to the backend byte for byte; it is parsed only to read `model`
and `stream`. Backends come from the in-memory snapshot (no database I/O
here). Each try is an `Attempt` (accounting.py), settled exactly once. A
backend that fails before the client got a byte is failed over.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from gateway.json_bodies import parse_json_object, validate
from gateway.proxy.accounting import Attempt
from gateway.proxy.relay import (
    MAX_RESPONSE_BYTES,
    BufferedResponse,
    RelayedStream,
    relayed_headers,
    upstream_headers,
)
from gateway.proxy.runtime import ProxyRuntime
from gateway.proxy.usage import extract_usage
from gateway.routing.policy import Backend, parse_tags
from shared.errors import GatewayTimeout, InvalidRequest, NotFound, ServiceUnavailable
from shared.failures import FailureKind
from shared.upstream import ResponseStream, UpstreamError, UpstreamRequest, UpstreamTimeout

MAX_MODEL_NAME = 256


class ProxiedRequest(BaseModel):
    """What the gateway reads of an OpenAI request; every other field passes through untouched."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(
        min_length=1, max_length=MAX_MODEL_NAME, description="Which model to route to."
    )
    stream: bool = Field(False, description="Stream the answer as server-sent events.")


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


def status_failure(status: int) -> UpstreamError | None:
    """A backend's answer that is not passed on but failed over: 5xx and 429."""
    if status == 429:
        return UpstreamError(FailureKind.BUSY, "HTTP 429")
    if status >= 500:
        return UpstreamError(FailureKind.HTTP_ERROR, f"HTTP {status}")
    return None


Answer = RelayedStream | BufferedResponse


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

    async def run(self, target: ProxiedRequest) -> Answer:
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
        failures: list[UpstreamError] = []
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
            except UpstreamError as failure:
                failures.append(failure)
        if not failures:
            limit = self.settings.request_timeout_seconds
            raise GatewayTimeout(f"no answer within REQUEST_TIMEOUT_SECONDS ({limit:g}s)")
        raise GatewayTimeout(
            f"all {len(tried)} attempt(s) for model {target.model!r} failed; "
            f"last: {failures[-1].reason}"
        )

    async def attempt(self, backend: Backend, target: ProxiedRequest) -> Answer:
        """One try on `backend`: its answer, or an UpstreamError (the attempt is accounted)."""
        runtime = self.runtime
        attempt = Attempt(
            backend=backend,
            model=target.model,
            request_id=self.incoming.request_id,
            started=self.started_precise,
            balancer=runtime.balancer,
            feedback=runtime.feedback,
            request_log=runtime.request_log,
        )
        upstream: ResponseStream | None = None
        try:
            upstream = await self._send(backend, target.stream)
            failure = status_failure(upstream.status)
            if failure is not None:
                raise failure
            headers = relayed_headers(upstream.headers, backend.id)
            if upstream.status == 200 and upstream.content_type == "text/event-stream":
                first = await self._first_chunk(upstream)
                return RelayedStream(
                    upstream,
                    first,
                    headers=headers,
                    idle_timeout=self.settings.stream_idle_timeout_seconds,
                    attempt=attempt,
                )
            data = await upstream.read_all(MAX_RESPONSE_BYTES, self.deadline)
            upstream.release()
            attempt.answered(upstream.status, extract_usage(data))
            return BufferedResponse(upstream.status, headers, data)
        except UpstreamError as failure:
            attempt.failed(failure)
            if upstream is not None:
                upstream.close()
            raise
        except BaseException:
            attempt.abandoned()  # cancelled half-way: drop the connection
            if upstream is not None:
                upstream.close()
            raise

    async def _send(self, backend: Backend, stream: bool) -> ResponseStream:
        incoming = self.incoming
        request = UpstreamRequest(
            backend.base_url,
            incoming.path,
            upstream_headers(backend, incoming.content_type, incoming.request_id),
            incoming.body,
        )
        # A stream's headers may take at most STREAM_IDLE_TIMEOUT_SECONDS, like its chunks.
        deadline = self.deadline
        if stream:
            deadline = min(deadline, self.loop.time() + self.settings.stream_idle_timeout_seconds)
        return await self.runtime.transport.send(request, deadline)

    async def _first_chunk(self, upstream: ResponseStream) -> bytes:
        deadline = min(self.deadline, self.loop.time() + self.settings.stream_idle_timeout_seconds)
        try:
            chunk = await upstream.read_chunk(deadline)
        except UpstreamTimeout:
            raise UpstreamTimeout("timed out waiting for the first chunk") from None
        if not chunk:
            raise UpstreamError(FailureKind.TRUNCATED, "the stream ended before its first event")
        return chunk
