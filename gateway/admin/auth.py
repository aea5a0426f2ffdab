"""Who may use /admin: the admin key, checked before any handler runs."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.json_bodies import status_error_response


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
