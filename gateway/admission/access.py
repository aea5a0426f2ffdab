"""Who may call /v1: client keys (Bearer), and each client's limits.

`identify` is the first thing a request meets, before its body is read: a key
is looked up in the ring (gateway/admission/keyring.py: no database I/O). The
rule: a key is required when REQUIRE_CLIENT_AUTH is true or when any key exists
in the database (issuing the first key closes the gateway to anonymous
clients); without that, anyone may call, counted by address. An unknown key is
"invalid" whatever the reason (nothing to probe); a revoked or expired one says
so, as its holder may need to know.

An anonymous client is counted by its address; an IPv6 client by its /64, the
block one host is given (a host rotating through its block is one client). Its
counters are kept apart from keys', so a client spraying addresses cannot push
the keys' counts out.

The counters' store is chosen here too (`open_counters`): with one worker, its
own memory (gateway/admission/local_counters.py); with several, a table every
worker of this machine maps (shared_counters.py); with REDIS_URL, Redis
(redis_counters.py), every instance's.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.admission.charge import Account, Caller, Charge
from gateway.admission.counters import CounterStore
from gateway.admission.keyring import KeyRingHolder, seed_today
from gateway.admission.limits import Limits
from gateway.admission.local_counters import LocalCounters
from gateway.admission.shared_counters import SharedCounters, counters_folder
from shared.db import Database
from shared.errors import AuthenticationRequired
from shared.settings import Settings

if TYPE_CHECKING:
    from gateway.admission.backend_slots import BackendSlots
    from shared.cluster.redis_client import SharedRedis

ADMIN = Caller("admin", Limits())


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def client_of(host: str) -> str:
    """The rate limit's key for a client address: an IPv6 address by its /64."""
    if ":" not in host:
        return f"ip:{host}"
    try:
        network = ipaddress.IPv6Network(f"{host}/64", strict=False)
    except ValueError:
        return f"ip:{host}"
    return f"ip:{network}"


def default_limits(settings: Settings) -> Limits:
    """A key's limits where neither it nor its group sets them."""
    return Limits(
        requests_per_minute=settings.rate_limit_per_minute,
        tokens_per_minute=settings.key_tokens_per_minute,
        tokens_per_day=settings.key_tokens_per_day,
        max_concurrent=settings.key_max_concurrent,
    )


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class ClientAccess:
    def __init__(
        self,
        settings: Settings,
        keys: KeyRingHolder,
        store: CounterStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.always_required = settings.require_client_auth
        self.admin_key = settings.admin_api_key.get_secret_value().encode()
        self.address_limits = Limits(requests_per_minute=settings.rate_limit_per_minute)
        self.reservation = settings.token_reservation_default
        self.keys = keys
        self.store = store
        self.clock = clock

    @property
    def required(self) -> bool:
        return self.always_required or self.keys.current.requires_key(self.clock())

    def identify(
        self, authorization: str | None, address: str, api_key: str | None = None
    ) -> Caller:
        """The caller, or the 401 it should get. The key comes as a Bearer token (OpenAI's
        clients, Ollama's), or as `x-api-key` (Anthropic's SDK, Claude Code)."""
        token = bearer_token(authorization) or (api_key.strip() or None if api_key else None)
        if (
            token is not None
            and self.admin_key
            and hmac.compare_digest(token.encode(), self.admin_key)
        ):
            return ADMIN  # the admin (the web pages): every model, no limits
        client = None if token is None else self.keys.current.find(token)
        if client is None:
            if not self.required:
                return Caller(client_of(address), self.address_limits)
            if token is None:
                raise AuthenticationRequired(
                    "missing API key: send it as 'Authorization: Bearer <key>' "
                    "(or 'x-api-key: <key>', as Anthropic's clients do)"
                )
            raise AuthenticationRequired("invalid API key")
        if client.revoked_at is not None:
            raise AuthenticationRequired(
                f"this API key ({client.prefix}…) was revoked on {_when(client.revoked_at)}"
            )
        if client.expires_at is not None and client.expires_at <= self.clock():
            raise AuthenticationRequired(
                f"this API key ({client.prefix}…) expired on {_when(client.expires_at)}"
            )
        return Caller(client.subject, client.limits, client)

    def charge(
        self,
        caller: Caller,
        *,
        model: str,
        max_tokens: int | None,
        body_bytes: int,
        on_done: Callable[[Account], None] | None = None,
    ) -> Charge:
        """The request's claim on its limits (enter it to reserve): the answer's
        max_tokens (else TOKEN_RESERVATION_DEFAULT) and the prompt, estimated at a
        token per four bytes of body (an over-estimate for JSON; corrected after)."""
        completion = self.reservation if max_tokens is None else max_tokens
        return Charge(
            self.store,
            caller,
            model=model,
            tokens=completion + body_bytes // 4,
            on_done=on_done,
        )

    async def count_request(self, caller: Caller) -> Charge:
        """A request that uses no tokens (a list of models): counted, and settled."""
        async with Charge(self.store, caller, model="", tokens=0) as charge:
            return charge


async def open_counters(
    settings: Settings, redis: SharedRedis | None, database: Database
) -> CounterStore:
    """The clients' counters: this process's own with one worker (WORKERS=1: nobody to
    share them with), else this machine's (the folder the supervisor made for every
    worker); and with REDIS_URL Redis's, every instance's (the local ones then decide
    while Redis is away)."""
    local: SharedCounters | LocalCounters
    if settings.workers == 1:
        local = LocalCounters()
        # (with more workers, the supervisor seeds the shared table before they start)
        await asyncio.to_thread(seed_today, database, local)
    else:
        folder, made = counters_folder()
        local = SharedCounters(folder)
        local.owns_folder = made
    if redis is None:
        return local
    from gateway.admission.redis_counters import RedisCounters  # redis-py: only with Redis

    return RedisCounters(redis, local, in_flight_lapse=settings.request_timeout_seconds)


def backend_slots(settings: Settings, redis: SharedRedis | None) -> BackendSlots | None:
    """With REDIS_URL: the slots of registrations with a max_concurrent, every instance's."""
    if redis is None:
        return None
    from gateway.admission.backend_slots import BackendSlots  # redis-py: only with Redis

    return BackendSlots(redis, lapse=settings.request_timeout_seconds)


def close_counters(store: object) -> None:
    local = getattr(store, "local", None)
    if isinstance(local, SharedCounters):
        store = local
    if isinstance(store, SharedCounters):
        store.close()
        if store.owns_folder:
            shutil.rmtree(store.folder, ignore_errors=True)
