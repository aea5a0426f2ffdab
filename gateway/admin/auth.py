"""Who may use /admin, decided before any handler runs.

- The admin key (`X-API-Key: <ADMIN_API_KEY>`) may do everything.
- A registration key (`X-API-Key: <one of REGISTRATION_KEYS>`) may register new
  servers (or open a lease for one) and test a connection, and nothing else: a
  class's shared key lets students register without touching each other's servers.
- A management token (`X-Management-Token`, returned once at registration)
  may read, update, drain, check and deregister its own registration, and
  re-attach it with a lease (the token must be one the database knows, checked
  by a read before the handler's write; the handler finds which), and no other
  (403).

Keys and tokens are compared in constant time; none is ever logged or echoed.
An empty ADMIN_API_KEY turns the admin key off (the admin API answers 503 to
it), while registration keys and management tokens keep working.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admin.tokens import Revoker, token_matches
from gateway.json_bodies import status_error_response

# The routes about one registration that its management token may use.
_MANAGED = re.compile(
    r"/admin/(?:register/(?P<registered>[^/]+)|servers/(?P<server>[^/]+)"
    r"(?:/(?P<action>drain|undrain|check))?|leases/(?P<leased>[^/]+)/ack)$"
)
_KINDS = ("registered", "server", "leased")
_MANAGED_METHODS = {
    ("leased", None): {"POST"},
    ("registered", None): {"PUT", "DELETE"},
    ("server", None): {"GET"},
    ("server", "drain"): {"POST"},
    ("server", "undrain"): {"POST"},
    ("server", "check"): {"POST"},
}
# What a registration key may do.
_REGISTERING = ("/admin/register", "/admin/probe", "/admin/leases")  # POST only
# Routes about a model name whose handler finds which registration a token manages
# (the owner of a claim, or the one claiming), as a lease finds the one it re-attaches.
_BY_NAME = re.compile(r"/admin/models/.+/(?:claim|open|cohosts(?:/[^/]+)?)$")


class Role(enum.StrEnum):
    """Who a request to /admin was admitted as: the handlers' limits depend on it (the
    admin may do anything; hosts may not take the admin's priority tiers, say)."""

    ADMIN = "admin"
    REGISTRAR = "registrar"  # a registration key
    HOST = "host"  # a registration's management token


ROLE_SCOPE_KEY = "gateway.admin_role"
# GET routes a management token may read, narrowed by the handler to its own
# registration (whose id the middleware puts in the scope): a host's usage and row.
_OWN_READS = ("/admin/servers", "/admin/stats")
OWN_REGISTRATION_SCOPE_KEY = "gateway.own_registration"


def own_registration(request: Request) -> str | None:
    """The registration a token-admitted read is narrowed to (None: the admin's read)."""
    found = request.scope.get(OWN_REGISTRATION_SCOPE_KEY)
    return found if isinstance(found, str) else None


def role_of(request: Request) -> Role:
    """The role the middleware admitted this request as (a host's, if it is not set)."""
    role = request.scope.get(ROLE_SCOPE_KEY)
    return role if isinstance(role, Role) else Role.HOST


def managed_registration(method: str, path: str) -> str | None:
    """The registration id a request is about, if a management token may make it."""
    found = _MANAGED.search(path)
    if found is None or not path.endswith(found.group(0)):
        return None
    kind = next(kind for kind in _KINDS if found.group(kind))
    if method not in _MANAGED_METHODS.get((kind, found.group("action")), set()):
        return None
    return found.group(kind)


def deregistered_by(headers: Headers) -> Revoker:
    """Who a deregistration admitted here comes from: a request carrying
    X-Management-Token is admitted on that token alone, so it is the owner's."""
    return Revoker.OWNER if headers.get("x-management-token") else Revoker.ADMIN


@dataclass(frozen=True)
class AdminCredentials:
    admin_key: str
    registration_keys: Sequence[str] = ()


def _same(sent: str, expected: str) -> bool:
    return hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode())


class AdminKeyMiddleware:
    """Admit a request to /admin by its admin key, registration key or management token.

        `token_hash_of(registration_id)` reads a registration's stored token hash, and
        `token_known(token)` whether a lease's token is (or was) any registration's, and
    `token_registration(token)` the active registration a token manages (for the
    reads narrowed to it: its row in the list, its statistics):
        blocking database reads, run in a thread, so a made-up token never reaches a
        handler's write transaction."""

    def __init__(
        self,
        app: ASGIApp,
        credentials: AdminCredentials,
        token_hash_of: Callable[[str], str | None] = lambda _: None,
        token_known: Callable[[str], bool] = lambda _: False,
        token_registration: Callable[[str], str | None] = lambda _: None,
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.token_hash_of = token_hash_of
        self.token_known = token_known
        self.token_registration = token_registration

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        admitted = await self._admit(scope)
        if not isinstance(admitted, Role):
            status, message = admitted
            await status_error_response(status, message)(scope, receive, send)
            return
        scope[ROLE_SCOPE_KEY] = admitted
        await self.app(scope, receive, send)

    async def _admit(self, scope: Scope) -> tuple[int, str] | Role:
        """The role a request is admitted as, or the status and words of its refusal."""
        headers = Headers(scope=scope)
        method, path = scope["method"], scope["path"]
        token = headers.get("x-management-token")
        if token:
            by_name = method in ("POST", "DELETE") and _BY_NAME.search(path) is not None
            if (method == "POST" and path.endswith("/admin/leases")) or by_name:
                # The lease re-attaches the registration the token manages (or answers
                # why it may not: a revoked token is known too).
                if await run_in_threadpool(self.token_known, token):
                    return Role.HOST
                return 403, "this management token manages no registration"
            if method == "GET" and path.endswith(_OWN_READS):
                own = await run_in_threadpool(self.token_registration, token)
                if own is None:
                    return 403, "this management token manages no active registration"
                scope[OWN_REGISTRATION_SCOPE_KEY] = own
                return Role.HOST
            registration_id = managed_registration(method, path)
            if registration_id is None:
                return 403, "a management token may only manage its own registration"
            stored = await run_in_threadpool(self.token_hash_of, registration_id)
            if not token_matches(token, stored):
                return 403, "this management token does not manage that registration"
            return Role.HOST
        sent = headers.get("x-api-key")
        admin_key = self.credentials.admin_key
        if sent and admin_key and _same(sent, admin_key):
            return Role.ADMIN
        if sent and any(_same(sent, key) for key in self.credentials.registration_keys):
            if method == "POST" and path.endswith(_REGISTERING):
                return Role.REGISTRAR
            return 403, "a registration key may only register new servers"
        if not admin_key:
            return 503, "the admin API is disabled: set ADMIN_API_KEY and restart the gateway"
        if not sent:
            return 401, "missing X-API-Key header: the admin API needs the admin key"
        return 403, "invalid admin API key"
