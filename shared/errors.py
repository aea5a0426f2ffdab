"""The one error hierarchy of the project, and its OpenAI-format body.

    GatewayError                      (500 server_error)
    ├── InvalidRequest                (400 invalid_request_error)
    ├── AuthenticationRequired        (401 authentication_error)
    ├── PermissionDenied              (403 permission_error)
    ├── NotFound                      (404 not_found_error)
    ├── Conflict                      (409 conflict_error)
    ├── PayloadTooLarge               (413 invalid_request_error)
    ├── RateLimited                   (429 rate_limit_error)
    ├── BadGateway                    (502 server_error)
    ├── ServiceUnavailable            (503 service_unavailable)
    │   └── DatabaseUnavailable       (503: busy, disk full, file deleted or replaced)
    └── GatewayTimeout                (504 timeout_error)

Messages are written for the person reading them: they never contain a
backend URL, a key or a stack trace.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every error the gateway answers with on purpose."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"

    def __init__(
        self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationRequired(GatewayError):
    status_code = 401
    error_type = "authentication_error"


class PermissionDenied(GatewayError):
    status_code = 403
    error_type = "permission_error"


class NotFound(GatewayError):
    status_code = 404
    error_type = "not_found_error"


class Conflict(GatewayError):
    status_code = 409
    error_type = "conflict_error"


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"


class RateLimited(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"


class BadGateway(GatewayError):
    """No usable answer from a backend: unreachable, reset, a bad or cut answer."""

    status_code = 502
    error_type = "server_error"


class ServiceUnavailable(GatewayError):
    status_code = 503
    error_type = "service_unavailable"


class DatabaseProblem(enum.StrEnum):
    """Why the database cannot take a write now; each says what was (not) done."""

    BUSY = (
        "the database is busy (a backup or a long write holds it); nothing was changed, "
        "retry in a few seconds"
    )
    FULL = "the disk holding the database is full; nothing was changed"
    FILE_GONE = (
        "the database file was deleted or replaced while the gateway had it open; "
        "nothing was changed (a write now would be lost or go to another database "
        "than healthd's): restart the gateway and healthd"
    )


class DatabaseUnavailable(ServiceUnavailable):
    """A write the database refused for a reason of its own, named by `problem`."""

    def __init__(self, problem: DatabaseProblem) -> None:
        retry = {"Retry-After": "5"} if problem is DatabaseProblem.BUSY else None
        super().__init__(problem.value, headers=retry)
        self.problem = problem


class GatewayTimeout(GatewayError):
    status_code = 504
    error_type = "timeout_error"


# Error types for HTTP statuses raised by the framework itself (404 route, 405 ...).
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def error_body(
    status_code: int, message: str, error_type: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI error shape: `{"error": {"message", "type", "param", "code"}}`.

    `code` is the HTTP status, as section FR-ERROR-002 of the requirements asks.
    """
    if error_type is None:
        error_type = _TYPE_BY_STATUS.get(
            status_code, "server_error" if status_code >= 500 else "invalid_request_error"
        )
    return {"error": {"message": message, "type": error_type, "param": param, "code": status_code}}


def body_for(error: GatewayError) -> dict[str, Any]:
    """The OpenAI-format body of one of our own errors."""
    return error_body(error.status_code, error.message, error.error_type, error.param)
