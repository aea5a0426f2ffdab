"""Every error becomes an OpenAI-format answer here, and nowhere else.

Two shapes of the same thing: Starlette's exception handlers for the routes
behind its middleware, and `error_answer` for the proxy's plain-ASGI path
(a JSONResponse costs more than the answer it carries).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler, Receive, Scope, Send

from shared.db import database_failure
from shared.errors import GatewayError, body_for, error_body
from shared.logging import get_logger

log = get_logger("api")

INTERNAL_ERROR_MESSAGE = "internal error; the gateway's log has the details"

_FRAMEWORK_MESSAGES = {
    404: "no such route: {method} {path}",
    405: "method {method} is not allowed on {path}",
    413: "the request body is too large",
}


class JSONAnswer:
    """A JSON answer made by the gateway itself, sent as plain ASGI.

    `headers` is a list the caller may still append to before it is sent."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
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


def note_error(error: GatewayError) -> None:
    """Our own 5xx answers are worth a line in the log; 4xx are the client's business."""
    if error.status_code >= 500:
        log.warning("request failed", status=error.status_code, reason=error.message)


def error_answer(error: GatewayError, body: dict[str, Any] | None = None) -> JSONAnswer:
    """The error as an answer: in the OpenAI shape, or the `body` given (the shape of
    another API: Ollama's, Anthropic's)."""
    note_error(error)
    headers = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    return JSONAnswer(error.status_code, body_for(error) if body is None else body, headers)


def internal_error_answer(
    path: str, error: BaseException, body: dict[str, Any] | None = None
) -> JSONAnswer:
    """A fault of the gateway's, as an answer: in the OpenAI shape, or the `body` given
    (the shape of another API). The traceback goes to the log (redacted), never to the
    client."""
    log.error("unhandled error", path=path, exc_info=error)
    return JSONAnswer(500, error_body(500, INTERNAL_ERROR_MESSAGE) if body is None else body, [])


# The error shape of the API a path belongs to (Ollama's under /api/, ...), None for
# OpenAI's: given by the app, as the shapes are the translations'.
ShapeFor = Callable[[str], Callable[[int, str], dict[str, Any]] | None]


def shaped_response(
    shape_for: ShapeFor,
    path: str,
    status: int,
    message: str,
    openai_body: dict[str, Any],
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error answer in the shape of the API whose path was asked (an Ollama client's
    GET /api/tags refused for its key gets Ollama's error), else `openai_body`."""
    shape = shape_for(path)
    body = openai_body if shape is None else shape(status, message)
    return JSONResponse(body, status_code=status, headers=headers)


def gateway_error_handler(shape_for: ShapeFor) -> ExceptionHandler:
    """The gateway's own typed errors raised in a route (a refused key, a missing model)."""

    async def handle_gateway_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, GatewayError)
        note_error(error)
        path, status = request.url.path, error.status_code
        return shaped_response(
            shape_for, path, status, error.message, body_for(error), error.headers
        )

    return handle_gateway_error


def http_exception_handler(shape_for: ShapeFor) -> ExceptionHandler:
    """Starlette's own 404 and 405 (no such route, another method) in the shape of the
    API whose path was asked: an Ollama client's POST /api/pull gets Ollama's error."""

    async def handle_http_exception(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        path, status = request.url.path, error.status_code
        template = _FRAMEWORK_MESSAGES.get(status)
        message = template.format(method=request.method, path=path) if template else error.detail
        body = error_body(status, message)
        return shaped_response(shape_for, path, status, message, body, error.headers)

    return handle_http_exception


def unexpected_handler(shape_for: ShapeFor) -> Callable[[Request, Exception], Awaitable[Response]]:
    """A fault of the gateway's: the traceback to the log (redacted), never to the client."""

    async def handle_unexpected(request: Request, error: Exception) -> Response:
        path = request.url.path
        log.error("unhandled error", path=path, exc_info=error)
        body = error_body(500, INTERNAL_ERROR_MESSAGE)
        return shaped_response(shape_for, path, 500, INTERNAL_ERROR_MESSAGE, body)

    return handle_unexpected


def database_error_handler(shape_for: ShapeFor) -> ExceptionHandler:
    unexpected = unexpected_handler(shape_for)

    async def handle_database_error(request: Request, error: Exception) -> Response:
        # Busy: BEGIN IMMEDIATE took no lock; full: SQLite rolled the transaction back;
        # file gone: refused before it began. Nothing was written in any of them.
        typed = database_failure(error)
        if typed is None:
            return await unexpected(request, error)
        # The driver's message (never SQLAlchemy's, which carries the statement's values).
        detail = str(getattr(error, "orig", None) or error)
        path = request.url.path
        log.warning("database unavailable", path=path, problem=typed.problem.name, detail=detail)
        status = typed.status_code
        return shaped_response(
            shape_for, path, status, typed.message, body_for(typed), typed.headers
        )

    return handle_database_error


def exception_handlers(shape_for: ShapeFor) -> dict[type[Exception] | int, ExceptionHandler]:
    return {
        GatewayError: gateway_error_handler(shape_for),
        HTTPException: http_exception_handler(shape_for),
        SQLAlchemyError: database_error_handler(shape_for),
        Exception: unexpected_handler(shape_for),
    }
