"""The OpenAI-compatible proxy: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

The body goes to the backend byte for byte; it is parsed only to read `model`
and `stream`. Backends come from the in-memory snapshot (no database I/O
here); what the request teaches us (usage, failures) is buffered in Feedback.
A backend that fails before the client got a byte is failed over.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from gateway.balancer import Balancer
from gateway.client_access import ClientAccess
from gateway.feedback import Feedback
from gateway.http import parse_json_object, validate
from gateway.routing import Backend, parse_tags
from gateway.snapshot import SnapshotHolder
from gateway.upstream import (
    MAX_RESPONSE_BYTES,
    RelayedStream,
    StreamOutcome,
    UpstreamFailure,
    describe_client_error,
    extract_usage,
    relayed_headers,
    upstream_headers,
)
from shared.errors import GatewayTimeout, InvalidRequest, NotFound, ServiceUnavailable
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger("api")


class ProxiedRequest(BaseModel):
    """What the gateway reads of an OpenAI request; every other field passes through untouched."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256, description="Which model to route to.")
    stream: bool = Field(False, description="Stream the answer as server-sent events.")


@dataclass
class ProxyRuntime:
    """The proxy's moving parts, built per app (see app.py)."""

    settings: Settings
    holder: SnapshotHolder
    balancer: Balancer
    feedback: Feedback
    access: ClientAccess
    session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        connect = self.settings.connect_timeout_seconds
        # A stream may be silent at most STREAM_IDLE_TIMEOUT_SECONDS between reads;
        # a plain answer is bounded by the request deadline instead.
        self.stream_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect,
            sock_connect=connect,
            sock_read=self.settings.stream_idle_timeout_seconds,
        )
        self.plain_timeout = aiohttp.ClientTimeout(
            total=None, connect=connect, sock_connect=connect
        )


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
    if "model" not in document:
        raise InvalidRequest("you must provide a model parameter", param="model")
    return validate(ProxiedRequest, document)


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
        self.started = self.loop.time()
        self.deadline = self.started + self.settings.request_timeout_seconds

    async def run(self, target: ProxiedRequest) -> RelayedStream | BufferedResponse:
        runtime = self.runtime
        self.read_timeout = runtime.stream_timeout if target.stream else runtime.plain_timeout
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
        return round((self.loop.time() - self.started) * 1000, 2)

    async def _send(self, backend: Backend) -> aiohttp.ClientResponse:
        session = self.runtime.session
        assert session is not None
        incoming = self.incoming
        headers = upstream_headers(backend, incoming.content_type, incoming.request_id)
        url = f"{backend.base_url}{incoming.path}"
        for fresh_try in (False, True):
            try:
                async with asyncio.timeout_at(self.deadline):
                    return await session.post(
                        url, data=incoming.body, headers=headers, timeout=self.read_timeout
                    )
            except aiohttp.ServerDisconnectedError as error:
                # Most often a pooled keep-alive connection the backend just closed:
                # one retry on a new connection before calling the backend broken.
                if fresh_try:
                    raise UpstreamFailure(describe_client_error(error)) from None
            except (aiohttp.ClientError, TimeoutError) as error:
                raise UpstreamFailure(describe_client_error(error)) from None
        raise AssertionError("unreachable")

    async def attempt(
        self, backend: Backend, target: ProxiedRequest
    ) -> BufferedResponse | RelayedStream:
        balancer = self.runtime.balancer
        balancer.started(backend.id)
        handed_over = False
        try:
            upstream = await self._send(backend)
            status = upstream.status
            if status >= 500 or status == 429:
                upstream.close()
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
            log.info(
                "request served",
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

    async def _first_chunk(self, upstream: aiohttp.ClientResponse) -> bytes:
        timeout = min(
            self.settings.stream_idle_timeout_seconds, max(0.0, self.deadline - self.loop.time())
        )
        try:
            async with asyncio.timeout(timeout):
                chunk = await upstream.content.readany()
        except TimeoutError:
            upstream.close()
            raise UpstreamFailure(f"no first chunk within {timeout:g}s") from None
        except aiohttp.ClientError as error:
            upstream.close()
            raise UpstreamFailure(describe_client_error(error)) from None
        if not chunk:
            upstream.close()
            raise UpstreamFailure("the stream ended before its first event")
        return chunk

    async def _read_all(self, upstream: aiohttp.ClientResponse) -> bytes:
        if (upstream.content_length or 0) > MAX_RESPONSE_BYTES:
            upstream.close()
            raise UpstreamFailure("the response is too large")
        try:
            async with asyncio.timeout_at(self.deadline):
                data = await upstream.content.read(MAX_RESPONSE_BYTES + 1)
                if len(data) > MAX_RESPONSE_BYTES:
                    raise UpstreamFailure("the response is too large")
                if not upstream.content.at_eof():
                    # read(n) may stop early; collect the rest within the cap.
                    rest = await upstream.content.read()
                    data += rest
                    if len(data) > MAX_RESPONSE_BYTES:
                        raise UpstreamFailure("the response is too large")
        except UpstreamFailure:
            upstream.close()
            raise
        except (aiohttp.ClientError, TimeoutError) as error:
            upstream.close()
            raise UpstreamFailure(describe_client_error(error)) from None
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
            log.info(
                "request served",
                model=target.model,
                registration_id=backend.id,
                status=200,
                latency_ms=latency,
                stream=True,
                client_gone=outcome.client_gone,
            )
