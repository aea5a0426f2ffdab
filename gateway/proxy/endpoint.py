"""The /v1 endpoints as plain ASGI, and the dispatcher that puts them first.

The three POST routes are the hot path. The Dispatcher hands them to
ProxyEndpoint directly, before Starlette's middleware stack: the endpoint does
itself, in one place and cheaply, what that stack would do (request id, CORS
headers, body limit, OpenAI-format errors). Everything else, `/v1/models`
and CORS preflights included, goes through the Starlette app as usual. The
same endpoints are also Starlette routes, so `/openapi.json` documents them.

Measured with `make bench`: this path is what took the gateway from about a
third to about the throughput of a bare proxy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import structlog
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.context import GatewayContext, context_of
from gateway.json_bodies import json_response
from gateway.middleware import choose_request_id
from gateway.openapi import DocumentedRoute, Operation
from gateway.proxy.forward import (
    BufferedResponse,
    Forwarder,
    Incoming,
    ProxiedRequest,
    ProxyRuntime,
    parse_proxied,
)
from gateway.proxy.relay import RelayedStream
from shared.errors import GatewayError, PayloadTooLarge, ServiceUnavailable, body_for, error_body
from shared.logging import get_logger

log = get_logger("api")

FORWARDED_PATHS = ("/chat/completions", "/completions", "/embeddings")
EXPOSED_HEADERS = b"X-Request-ID, X-Gateway-Server-ID"


class ModelEntry(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "multiverse"
    available_servers: int = Field(description="Healthy backends serving this model now.")


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelEntry]


class JSONAnswer:
    """A JSON answer made by the gateway itself (an error), sent as plain ASGI."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]]
    ) -> None:
        self.status = status
        self.payload = json.dumps(body).encode()
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.payload)).encode()),
            *headers,
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.payload})


Answer = JSONAnswer | BufferedResponse | RelayedStream


_WANTED_HEADERS = frozenset(
    {
        b"authorization",
        b"content-length",
        b"content-type",
        b"origin",
        b"x-gateway-tags",
        b"x-request-id",
    }
)


def wanted_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request headers the proxy reads, in one pass over the raw list."""
    return {name: value for name, value in scope["headers"] if name in _WANTED_HEADERS}


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


class ProxyEndpoint:
    """POST /v1/<path> as a plain ASGI app."""

    def __init__(self, context: GatewayContext, api_path: str) -> None:
        self.context = context
        self.api_path = api_path
        self.__name__ = api_path.strip("/").replace("/", "_")
        settings = context.settings
        self.max_body = settings.max_request_body_bytes
        self.cors_any = settings.enable_cors and "*" in settings.cors_origins
        self.cors_origins = (
            frozenset(settings.cors_origins) if settings.enable_cors else frozenset()
        )

    def _cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if origin is None:
            return []
        if self.cors_any:
            allowed = b"*"
        elif origin in self.cors_origins:
            allowed = origin.encode("latin-1")
        else:
            return []
        headers = [
            (b"access-control-allow-origin", allowed),
            (b"access-control-expose-headers", EXPOSED_HEADERS),
        ]
        if allowed != b"*":
            headers.append((b"vary", b"Origin"))
        return headers

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise PayloadTooLarge(
                f"the request body is larger than the limit of {self.max_body} bytes"
            )
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
                raise PayloadTooLarge(
                    f"the request body is larger than the limit of {self.max_body} bytes"
                )
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = wanted_headers(scope)
        state = scope.setdefault("state", {})
        # Reached through Starlette, its middleware already set the id and CORS headers.
        through_starlette = "request_id" in state
        request_id = state.get("request_id") or choose_request_id(
            _text(headers.get(b"x-request-id"))
        )
        # uvicorn runs each request in a task of its own, so the binding ends with it
        # (cheaper than a context manager around the whole request).
        structlog.contextvars.bind_contextvars(request_id=request_id)
        response = await self._respond(scope, headers, receive, request_id)
        if not through_starlette:
            state["request_id"] = request_id
            response.headers.append((b"x-request-id", request_id.encode()))
            response.headers += self._cors_headers(_text(headers.get(b"origin")))
        await response(scope, receive, send)

    async def _respond(
        self, scope: Scope, headers: dict[bytes, bytes], receive: Receive, request_id: str
    ) -> Answer:
        runtime = self.context.proxy
        try:
            if runtime is None or runtime.pool is None:
                raise ServiceUnavailable("the gateway is starting or stopping")
            client = scope.get("client")
            runtime.access.admit(
                _text(headers.get(b"authorization")), client[0] if client else "unknown"
            )
            body = await self._read_body(headers, receive)
            target = parse_proxied(body)
            incoming = Incoming(
                path=f"/v1{self.api_path}",
                body=body,
                content_type=_text(headers.get(b"content-type")),
                tags_header=_text(headers.get(b"x-gateway-tags")),
                request_id=request_id,
            )
            return await Forwarder(runtime, incoming).run(target)
        except GatewayError as error:
            if error.status_code >= 500:
                log.warning("request failed", status=error.status_code, reason=error.message)
            extra = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
            return JSONAnswer(error.status_code, body_for(error), extra)
        except Exception as error:  # the one place a proxy bug becomes a 500
            log.error("unhandled error", path=scope.get("path"), exc_info=error)
            return JSONAnswer(
                500, error_body(500, "internal error; the gateway's log has the details"), []
            )


class Dispatcher:
    """The outermost ASGI app: the proxy's POST routes first, everything else to Starlette."""

    def __init__(self, app: Any, fast_routes: dict[str, ProxyEndpoint]) -> None:
        self.app = app
        self.fast_routes = fast_routes

    def __getattr__(self, name: str) -> Any:
        # routes, state, ... of the Starlette app (tests and tools look at them).
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.fast_routes.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def list_models(request: Request) -> Response:
    runtime: ProxyRuntime | None = context_of(request).proxy
    if runtime is None:
        raise ServiceUnavailable("the gateway is starting or stopping")
    runtime.access.admit(
        request.headers.get("authorization"), request.client.host if request.client else "unknown"
    )
    snapshot = runtime.holder.current
    return json_response(
        ModelList(
            data=[
                ModelEntry(
                    id=model,
                    created=snapshot.created.get(model, 0),
                    available_servers=snapshot.healthy_count(model),
                )
                for model in sorted(snapshot.by_model)
            ]
        )
    )


_PROXY_RESPONSES = {
    200: "the backend's answer (JSON, or server-sent events when stream is true)",
    400: "malformed JSON or no model",
    401: "client key required (REQUIRE_CLIENT_AUTH)",
    403: "invalid client key",
    404: "unknown model; the message lists the available ones",
    413: "body over MAX_REQUEST_BODY_BYTES",
    429: "rate limit exceeded (see Retry-After)",
    503: "no healthy backend for the model",
    504: "every attempt failed, or REQUEST_TIMEOUT_SECONDS passed",
}

_SUMMARIES = {
    "/chat/completions": "Chat completion (OpenAI-compatible)",
    "/completions": "Text completion (OpenAI-compatible)",
    "/embeddings": "Embeddings (OpenAI-compatible)",
}


def proxy_endpoints(context: GatewayContext) -> dict[str, ProxyEndpoint]:
    """The forwarding endpoints by full path, for the Dispatcher and the routes."""
    return {f"/v1{path}": ProxyEndpoint(context, path) for path in FORWARDED_PATHS}


def proxy_routes(endpoints: dict[str, ProxyEndpoint]) -> list[DocumentedRoute]:
    """The routes mounted at /v1 (for documentation, and reachable through Starlette too)."""
    routes = [
        DocumentedRoute(
            endpoint.api_path,
            endpoint,
            method="POST",
            operation=Operation(
                summary=_SUMMARIES[endpoint.api_path],
                description="Forwarded byte for byte to a healthy backend of `model`. "
                "Optional header `X-Gateway-Tags: gpu,vision` restricts the backends. "
                "The answer carries `X-Gateway-Server-ID`.",
                tag="inference",
                request_model=ProxiedRequest,
                responses=_PROXY_RESPONSES,
                extra_schema={"security": [{}, {"ClientKey": []}]},
            ),
        )
        for endpoint in endpoints.values()
    ]
    routes.append(
        DocumentedRoute(
            "/models",
            list_models,
            method="GET",
            operation=Operation(
                summary="Models and how many healthy backends serve each",
                tag="inference",
                response_model=ModelList,
                responses={200: "the model list", 401: "client key required", 429: "rate limited"},
            ),
        )
    )
    return routes
