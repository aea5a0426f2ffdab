"""Receiving a /v1 POST: the one handler of the forwarding routes, as plain ASGI.

These routes are the hot path. They sit in the app's routing table like any
other (so `/openapi.json` documents them, and another method on their path
gets Starlette's 405), but the `Dispatcher` serves a POST to them before
Starlette's middleware stack: the endpoint does itself, in one place and
cheaply, what that stack would do (request id, body limit, OpenAI-format
errors, and CORS through Starlette's own CORSMiddleware, whose response
headers it applies when the request has an Origin: wrapped around the
endpoint, the middleware cost a measurable share of every request, with
bench/ab.py). The README's Performance section has what this path changed.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import structlog
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.admission.charge import Caller, Charge
from gateway.context import GatewayContext
from gateway.errors import INTERNAL_ERROR_MESSAGE, JSONAnswer, error_answer, internal_error_answer
from gateway.middleware import body_too_large, choose_request_id, cors_options
from gateway.openapi import DocumentedRoute, Operation, walk_routes
from gateway.proxy.apis import FORWARDED_APIS, ForwardedAPI
from gateway.proxy.bodies import (
    EMPTY_HINT,
    READ_MEMBERS,
    ProxiedRequest,
    Target,
    is_form,
    json_target,
    parse_strict_target,
    parse_target,
)
from gateway.proxy.client_watch import ClientWatch
from gateway.proxy.forward import Answer, Forwarder, Incoming
from gateway.proxy.relay import RelayedStream
from gateway.proxy.runtime import ProxyRuntime
from gateway.proxy.translated import forward as forward_translating
from gateway.proxy.translated import shaped_body, shaped_error, translates
from gateway.splice.child_parse import ChildFailed, members_in_child
from shared.errors import GatewayError, NotFound, ServiceUnavailable
from shared.logging import get_logger
from shared.upstream.trace import TraceContext, trace_context

log = get_logger("api")

# A body above this is parsed off the event loop (read_target).
LARGE_BODY_BYTES = 1024 * 1024

TargetParser = Callable[[bytes, str | None, bool], Target]

_WANTED_HEADERS = frozenset(
    {
        b"authorization",
        b"content-length",
        b"content-type",
        b"origin",
        b"traceparent",
        b"tracestate",
        b"x-api-key",
        b"x-gateway-tags",
        b"x-request-id",
        b"x-session-id",
    }
)


def wanted_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request headers the proxy reads, in one pass over the raw list."""
    return {name: value for name, value in scope["headers"] if name in _WANTED_HEADERS}


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


class ProxyEndpoint:
    """POST to one forwarded API as a plain ASGI app."""

    def __init__(self, context: GatewayContext, api: ForwardedAPI, route_path: str) -> None:
        self.context = context
        self.api = api
        self.route_path = route_path  # the path within its mount
        self.__name__ = api.path.strip("/").replace("/", "_")
        settings = context.settings
        self.max_body = settings.max_request_body_bytes
        # Starlette's CORS policy, for its response headers (preflights never get here).
        self.cors = CORSMiddleware(self, **cors_options(settings)) if settings.enable_cors else None
        # Ollama's and Anthropic's APIs: translated for a backend that lacks them.
        self.translates = translates(api.path)
        self.parse: TargetParser = parse_strict_target if api.strict_numbers else parse_target

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise body_too_large(self.max_body)
        chunks = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ServiceUnavailable("the client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise body_too_large(self.max_body)
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = wanted_headers(scope)
        state = scope.setdefault("state", {})
        # Set already when Starlette's middleware ran first (the routes it serves).
        request_id = state.get("request_id") or choose_request_id(
            _text(headers.get(b"x-request-id"))
        )
        state["request_id"] = request_id
        # uvicorn runs each request in a task of its own, so the binding ends with it
        # (cheaper than a context manager around the whole request).
        structlog.contextvars.bind_contextvars(request_id=request_id)
        watch = ClientWatch(receive)
        try:
            response = await self._respond(scope, headers, receive, request_id, watch)
            response.headers.append((b"x-request-id", request_id.encode()))
            if self.cors is not None and b"origin" in headers:
                send = functools.partial(
                    self.cors.send, send=send, request_headers=Headers(scope=scope)
                )
            if not isinstance(response, RelayedStream):
                watch.stop()  # the work is done; a stream stops it before its end
            await response(scope, receive, send)
        except asyncio.CancelledError:
            if not watch.absorb_cancellation():
                raise
            # The client left: the attempt closed the backend's connection; nothing to send.
        finally:
            watch.stop()

    async def _respond(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        receive: Receive,
        request_id: str,
        watch: ClientWatch,
    ) -> Answer | JSONAnswer:
        runtime = self.context.proxy
        caller: Caller | None = None
        started = time.perf_counter()
        try:
            if runtime is None:
                raise ServiceUnavailable("the gateway is starting or stopping")
            client = scope.get("client")
            # Who it is, before its body is read: an unknown client costs no more.
            caller = runtime.access.identify(
                _text(headers.get(b"authorization")),
                client[0] if client else "unknown",
                _text(headers.get(b"x-api-key")),
            )
            body = await self._read_body(headers, receive)
            return await self.forward(runtime, scope, headers, body, request_id, watch, caller)
        except GatewayError as error:
            if runtime is not None:
                runtime.request_log.answered_by_gateway(
                    request_id,
                    model=scope["state"].get("model", ""),
                    status=error.status_code,
                    latency_ms=round((time.perf_counter() - started) * 1000, 2),
                    key_id=None if caller is None else caller.key_id,
                )
            # In the API's own error shape (Ollama's, Anthropic's), else OpenAI's.
            return error_answer(error, shaped_error(self.api.path, error))
        except Exception as error:  # noqa: BLE001 (logged there: the one place a proxy bug becomes a 500)
            shaped = shaped_body(self.api.path, 500, INTERNAL_ERROR_MESSAGE)
            return internal_error_answer(scope.get("path", ""), error, shaped)

    async def forward(
        self,
        runtime: ProxyRuntime,
        scope: Scope,
        headers: dict[bytes, bytes],
        body: bytes,
        request_id: str,
        watch: ClientWatch,
        caller: Caller,
    ) -> Answer | JSONAnswer:
        """Route the request by its model and forward it (translated, where its API
        needs it), within its client's limits; the answer (an error too) carries the
        x-ratelimit-* headers of the limits."""
        content_type = _text(headers.get(b"content-type"))
        target = await read_target(
            body,
            content_type,
            self.api.streams_by_default,
            parse=self.parse,
            executor=runtime.large_bodies,
        )
        scope["state"]["model"] = target.model  # (for the line of an error answer)
        if not caller.may_use(target.model):  # a group's keys see only its models
            raise NotFound(f"model {target.model!r} not found", param="model")
        charge = runtime.access.charge(
            caller,
            model=target.model,
            max_tokens=target.max_tokens,
            body_bytes=0 if is_form(content_type) else len(body),
            on_done=runtime.account,
        )
        incoming = Incoming(
            path=self.api.path,
            body=body,
            content_type=content_type,
            tags_header=_text(headers.get(b"x-gateway-tags")),
            request_id=request_id,
            trace=request_trace(headers),
            model_span=target.model_span,
            charge=charge if charge.holds else None,  # (else it has nothing to hear)
            client=caller.subject,  # its turn in the fair queue
            priority=caller.priority,
            session=_text(headers.get(b"x-session-id")),
            may_use=caller.may_use,
        )
        try:
            if charge.holds:
                answer = await self._forward_charged(runtime, incoming, target, watch, charge)
            else:  # nothing to give back at its end: no exit stack to hold it
                await charge.admit()  # a refusal is the client's 429
                watch.start()
                answer = await self._forward_by_api(runtime, incoming, target, watch)
        except GatewayError as error:
            error.headers.update((k.decode(), v.decode()) for k, v in charge.headers())
            raise
        answer.headers.extend(charge.headers())
        return answer

    async def _forward_charged(
        self,
        runtime: ProxyRuntime,
        incoming: Incoming,
        target: Target,
        watch: ClientWatch,
        charge: Charge,
    ) -> Answer | JSONAnswer:
        """The charge is held until the answer is relayed (a stream: its end)."""
        async with charge:  # a refusal is the client's 429
            watch.start()
            answer = await self._forward_by_api(runtime, incoming, target, watch)
            if isinstance(answer, RelayedStream):
                # Settled when the stream ends (RelayedStream tells its attempt first).
                answer.held.push_async_exit(charge.end_later())
            return answer

    async def _forward_by_api(
        self, runtime: ProxyRuntime, incoming: Incoming, target: Target, watch: ClientWatch
    ) -> Answer | JSONAnswer:
        if self.translates:
            return await forward_translating(runtime, incoming, target, watch)
        return await Forwarder(runtime, incoming, watch).run(target)


async def read_target(
    body: bytes,
    content_type: str | None,
    stream_default: bool,
    *,
    parse: TargetParser = parse_target,
    parse_large: TargetParser | None = None,
    executor: Executor | None = None,
) -> Target:
    """The routing facts of a body: a small one parsed here, at once (a thread hop would
    cost more than the parse), a large one (`parse_large`, by default
    parse_large_target) in a worker thread, so that every other request of this
    worker goes on meanwhile (on `executor`: the runtime's few large-body threads)."""
    if len(body) <= LARGE_BODY_BYTES:
        return parse(body, content_type, stream_default)
    large = parse_large_target if parse_large is None else parse_large
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, large, body, content_type, stream_default)


def parse_large_target(body: bytes, content_type: str | None, stream_default: bool) -> Target:
    """parse_target for a large body, in a worker thread: a form is read here (its parser
    is Python code, which takes turns with the event loop), a JSON body in a child
    process (the C parser would hold the interpreter lock throughout; see
    gateway/splice/child_parse.py). If no child can run, it is parsed here."""
    if is_form(content_type):
        return parse_target(body, content_type, stream_default)
    try:
        members = members_in_child(body, READ_MEMBERS, empty_hint=EMPTY_HINT)
    except ChildFailed as failure:
        log.warning("a large body was parsed in the worker itself", reason=str(failure))
        return parse_target(body, content_type, stream_default)
    return json_target(members, stream_default, whole_body=False)


def request_trace(headers: dict[bytes, bytes]) -> TraceContext | None:
    return trace_context(_text(headers.get(b"traceparent")), _text(headers.get(b"tracestate")))


class ProxyRoute(DocumentedRoute):
    """A documented POST route whose requests the Dispatcher serves ahead of Starlette."""

    def __init__(self, endpoint: ProxyEndpoint, operation: Operation) -> None:
        super().__init__(endpoint.route_path, endpoint, method="POST", operation=operation)


class Dispatcher:
    """The outermost ASGI app: POSTs to the routing table's ProxyRoutes first, the rest
    to Starlette."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.fast_routes = {
            path: route.endpoint
            for path, route in walk_routes(routes)
            if isinstance(route, ProxyRoute)
        }

    def __getattr__(self, name: str) -> object:
        # routes, state, ... of the Starlette app (tests and tools look at them).
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST":
            endpoint = self.fast_routes.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        answered = False

        async def noting_send(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except Exception:
            # Starlette's ServerErrorMiddleware answered the OpenAI-shaped 500 (our
            # handler logged it with its traceback) and re-raised: swallowed here, so
            # uvicorn keeps the client's keep-alive connection instead of closing it.
            if not answered:
                raise


_PROXY_RESPONSES = {
    200: "the backend's answer (JSON, or server-sent events when stream is true)",
    400: "malformed JSON or no model",
    401: "a client key is required (REQUIRE_CLIENT_AUTH, or any key issued), or the key "
    "is invalid, revoked or expired",
    404: "unknown model; the message lists the available ones",
    413: "body over MAX_REQUEST_BODY_BYTES, or a form of over 1000 parts",
    429: "a client limit was reached (the message and `param` name it; see Retry-After "
    "and the x-ratelimit-* headers), or the pool is busy",
    503: "no healthy backend for the model",
    504: "every attempt failed, or REQUEST_TIMEOUT_SECONDS passed",
}


def proxy_routes(context: GatewayContext, mount: str) -> list[ProxyRoute]:
    """The forwarding routes of the APIs under `mount` ("/v1", or "" for the root)."""
    routes = []
    for api in FORWARDED_APIS:
        if api.mount != mount:
            continue
        endpoint = ProxyEndpoint(context, api, api.path.removeprefix(mount))
        body = "a multipart/form-data upload with a `model` field" if api.form else "JSON"
        operation = Operation(
            summary=api.summary,
            description=f"Forwarded byte for byte ({body}) to a healthy backend of `model` "
            "that has this API. Optional header `X-Gateway-Tags: gpu,vision` restricts "
            "the backends. The answer carries `X-Gateway-Server-ID`."
            + (
                " When no backend of the model has this API, the request is translated to "
                "OpenAI's and the answer back; a field left out is named in "
                "`X-Gateway-Dropped`, one that cannot be translated is a 400."
                if translates(api.path)
                else ""
            ),
            tag="inference",
            request_model=None if api.form else ProxiedRequest,
            responses=_PROXY_RESPONSES,
            extra_schema={"security": [{}, {"ClientKey": []}]},
        )
        routes.append(ProxyRoute(endpoint, operation))
    return routes
