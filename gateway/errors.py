"""Every exception becomes an OpenAI-format error here, and nowhere else."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from gateway.json_bodies import error_response, status_error_response
from shared.errors import GatewayError
from shared.logging import get_logger

log = get_logger("api")

_FRAMEWORK_MESSAGES = {
    404: "no such route: {method} {path}",
    405: "method {method} is not allowed on {path}",
    413: "the request body is too large",
}


async def handle_gateway_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, GatewayError)
    if error.status_code >= 500:
        log.warning("request failed", status=error.status_code, reason=error.message)
    return error_response(error)


async def handle_http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    template = _FRAMEWORK_MESSAGES.get(error.status_code)
    message = (
        template.format(method=request.method, path=request.url.path) if template else error.detail
    )
    return status_error_response(error.status_code, message, headers=error.headers)


async def handle_unexpected(request: Request, error: Exception) -> Response:
    # The traceback goes to the log (redacted), never to the client.
    log.error("unhandled error", path=request.url.path, exc_info=error)
    return status_error_response(500, "internal error; the gateway's log has the details")


EXCEPTION_HANDLERS: dict[type[Exception] | int, ExceptionHandler] = {
    GatewayError: handle_gateway_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
