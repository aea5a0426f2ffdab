"""Plain ASGI middleware: request ids, and the admin key check."""

from __future__ import annotations

import hmac
import os
import re

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.json_bodies import status_error_response
from shared.errors import PayloadTooLarge

REQUEST_ID_HEADER = "x-request-id"
_ACCEPTABLE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


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


class AdminKeyMiddleware:
    """Require `X-API-Key` equal to ADMIN_API_KEY (compared in constant time).

    An empty ADMIN_API_KEY turns the admin API off instead of leaving it open.
    """

    def __init__(self, app: ASGIApp, admin_key: str) -> None:
        self.app = app
        self.admin_key = admin_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.admin_key:
            response = status_error_response(
                503, "the admin API is disabled: set ADMIN_API_KEY and restart the gateway"
            )
            await response(scope, receive, send)
            return
        sent = Headers(scope=scope).get("x-api-key")
        if not sent:
            response = status_error_response(
                401, "missing X-API-Key header: the admin API needs the admin key"
            )
            await response(scope, receive, send)
            return
        if not hmac.compare_digest(sent.encode("latin-1", "replace"), self.admin_key):
            response = status_error_response(403, "invalid admin API key")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


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
                    raise PayloadTooLarge(self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"the request body is larger than the limit of {self.max_bytes} bytes"

    def _too_large(self) -> ASGIApp:
        return status_error_response(413, self._message(), headers={"Connection": "close"})
