"""Who may use /admin, decided before any handler runs.

- The admin key (`X-API-Key: <ADMIN_API_KEY>`) may do everything.
- A registration key (`X-API-Key: <one of REGISTRATION_KEYS>`) may register new
  servers (or open a lease for one) and test a connection, and nothing else: a
  class's shared key lets students register without touching each other's servers.
- A management token (`X-Management-Token`, returned once at registration)
  may read, update, drain, check and deregister its own registration, and
  re-attach it with a lease (the handler finds which), and no other (403).

Keys and tokens are compared in constant time; none is ever logged or echoed.
An empty ADMIN_API_KEY turns the admin key off (the admin API answers 503 to
it), while registration keys and management tokens keep working.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admin.tokens import token_matches
from gateway.json_bodies import status_error_response

# The routes about one registration that its management token may use.
_MANAGED = re.compile(
    r"/admin/(?:register/(?P<registered>[^/]+)|servers/(?P<server>[^/]+)"
    r"(?:/(?P<action>drain|undrain|check))?)$"
)
_MANAGED_METHODS = {
    ("registered", None): {"PUT", "DELETE"},
    ("server", None): {"GET"},
    ("server", "drain"): {"POST"},
    ("server", "undrain"): {"POST"},
    ("server", "check"): {"POST"},
}
# What a registration key may do.
_REGISTERING = ("/admin/register", "/admin/probe", "/admin/leases")  # POST only


def managed_registration(method: str, path: str) -> str | None:
    """The registration id a request is about, if a management token may make it."""
    found = _MANAGED.search(path)
    if found is None or not path.endswith(found.group(0)):
        return None
    kind = "registered" if found.group("registered") else "server"
    if method not in _MANAGED_METHODS.get((kind, found.group("action")), set()):
        return None
    return found.group(kind)


@dataclass(frozen=True)
class AdminCredentials:
    admin_key: str
    registration_keys: Sequence[str] = ()


def _same(sent: str, expected: str) -> bool:
    return hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode())


class AdminKeyMiddleware:
    """Admit a request to /admin by its admin key, registration key or management token.

    `token_hash_of(registration_id)` reads a registration's stored token hash (a
    blocking database read, run in a thread)."""

    def __init__(
        self,
        app: ASGIApp,
        credentials: AdminCredentials,
        token_hash_of: Callable[[str], str | None] = lambda _: None,
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.token_hash_of = token_hash_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(scope)
        if refusal is not None:
            status, message = refusal
            await status_error_response(status, message)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        method, path = scope["method"], scope["path"]
        token = headers.get("x-management-token")
        if token:
            if method == "POST" and path.endswith("/admin/leases"):
                return None  # the lease re-attaches the registration the token manages
            registration_id = managed_registration(method, path)
            if registration_id is None:
                return 403, "a management token may only manage its own registration"
            stored = await run_in_threadpool(self.token_hash_of, registration_id)
            if not token_matches(token, stored):
                return 403, "this management token does not manage that registration"
            return None
        sent = headers.get("x-api-key")
        admin_key = self.credentials.admin_key
        if sent and admin_key and _same(sent, admin_key):
            return None
        if sent and any(_same(sent, key) for key in self.credentials.registration_keys):
            if method == "POST" and path.endswith(_REGISTERING):
                return None
            return 403, "a registration key may only register new servers"
        if not admin_key:
            return 503, "the admin API is disabled: set ADMIN_API_KEY and restart the gateway"
        if not sent:
            return 401, "missing X-API-Key header: the admin API needs the admin key"
        return 403, "invalid admin API key"
