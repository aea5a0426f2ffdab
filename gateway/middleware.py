"""Plain ASGI middleware, and what the proxy's own path shares with it: request ids,
CORS options, the body limit."""

from __future__ import annotations

import os
import re
from typing import Any

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.json_bodies import status_error_response
from shared.errors import PayloadTooLarge
from shared.settings import Settings

EXPOSED_HEADERS = ("X-Request-ID", "X-Gateway-Server-ID")

REQUEST_ID_HEADER = "x-request-id"
_ACCEPTABLE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def cors_options(settings: Settings) -> dict[str, Any]:
    """Starlette's CORSMiddleware options: the one CORS policy, for every route."""
    return {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["*"],
        "allow_headers": ["*"],
        "expose_headers": list(EXPOSED_HEADERS),
    }


def body_too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than the limit of {max_bytes} bytes")


def choose_request_id(sent: str | None) -> str:
    """Keep the client's id when it is a sane token, so traces join up; else make one."""
    if sent and _ACCEPTABLE_REQUEST_ID.match(sent):
        return sent
    return os.urandom(16).hex()


class RequestIdMiddleware:
    """Give every request an id: in the logs, and in the `X-Request-ID` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


class BodySizeLimitMiddleware:
    """Refuse request bodies over `max_bytes` with an OpenAI-format 413.

    A declared Content-Length over the limit is refused before reading; a body
    that grows past it while streaming in raises PayloadTooLarge from
    `receive`, which the error handlers turn into the same 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise body_too_large(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> ASGIApp:
        message = body_too_large(self.max_bytes).message
        return status_error_response(413, message, headers={"Connection": "close"})


class QueryTextMiddleware:
    """Refuse a query string with a NUL character (`%00`) with a 400.

    Query values are compared with database columns (owner, model, key filters):
    PostgreSQL refuses a NUL in any text it is given (SQLite takes it), so without
    this the same request was a 400-or-200 on one engine and a 500 on the other.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if b"\x00" in query or b"%00" in query:
            refusal = status_error_response(
                400, "query parameters must be text without NUL characters (%00)"
            )
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)
