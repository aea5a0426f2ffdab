"""Every error becomes an OpenAI-format answer here, and nowhere else.

Two shapes of the same thing: Starlette's exception handlers for the routes
behind its middleware, and `error_answer` for the proxy's plain-ASGI path
(a JSONResponse costs more than the answer it carries).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler, Receive, Scope, Send

from gateway.json_bodies import error_response, status_error_response
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


def internal_error_answer(path: str, error: BaseException) -> JSONAnswer:
    # The traceback goes to the log (redacted), never to the client.
    log.error("unhandled error", path=path, exc_info=error)
    return JSONAnswer(500, error_body(500, INTERNAL_ERROR_MESSAGE), [])


async def handle_gateway_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, GatewayError)
    note_error(error)
    return error_response(error)


# The error shape of the API a path belongs to (Ollama's under /api/, ...), None for
# OpenAI's: given by the app, as the shapes are the translations'.
ShapeFor = Callable[[str], Callable[[int, str], dict[str, Any]] | None]


def http_exception_handler(shape_for: ShapeFor) -> ExceptionHandler:
    """Starlette's own 404 and 405 (no such route, another method) in the shape of the
    API whose path was asked: an Ollama client's POST /api/pull gets Ollama's error."""

    async def handle_http_exception(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        path = request.url.path
        template = _FRAMEWORK_MESSAGES.get(error.status_code)
        message = template.format(method=request.method, path=path) if template else error.detail
        shape = shape_for(path)
        if shape is None:
            return status_error_response(error.status_code, message, headers=error.headers)
        body = shape(error.status_code, message)
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    return handle_http_exception


async def handle_database_error(request: Request, error: Exception) -> Response:
    # Busy: BEGIN IMMEDIATE took no lock; full: SQLite rolled the transaction back;
    # file gone: refused before it began. Nothing was written in any of them.
    typed = database_failure(error)
    if typed is None:
        return await handle_unexpected(request, error)
    # The driver's message (never SQLAlchemy's, which carries the statement's values).
    detail = str(getattr(error, "orig", None) or error)
    log.warning(
        "database unavailable", path=request.url.path, problem=typed.problem.name, detail=detail
    )
    return error_response(typed)


async def handle_unexpected(request: Request, error: Exception) -> Response:
    log.error("unhandled error", path=request.url.path, exc_info=error)
    return status_error_response(500, INTERNAL_ERROR_MESSAGE)


def exception_handlers(shape_for: ShapeFor) -> dict[type[Exception] | int, ExceptionHandler]:
    return {
        GatewayError: handle_gateway_error,
        HTTPException: http_exception_handler(shape_for),
        SQLAlchemyError: handle_database_error,
        Exception: handle_unexpected,
    }
