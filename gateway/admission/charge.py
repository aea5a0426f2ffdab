"""One request's claim on its client's limits, settled exactly once, by structure.

    async with Charge(...) as charge:     # or on an AsyncExitStack handed on to a
        ...                               # relayed stream with pop_all()
        charge.used(prompt, completion)   # the answer's usage, when it has one

Entering reserves (a request, its tokens, a place in flight) or raises the 429
naming the limit, with Retry-After and the x-ratelimit-* headers. Leaving
corrects the reservation to the usage seen (an answer without usage keeps it: the
tokens were likely spent; a request that reached no backend gives it all back),
frees the place in flight, and hands the request's account to `on_done` (usage
per key, metrics per group: see gateway/proxy/endpoint.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import NamedTuple

from gateway.admission.counters import (
    CounterStore,
    Standing,
    needs_settling,
    ratelimit_headers,
)
from gateway.admission.keyring import Client
from gateway.admission.limits import Limits
from shared.errors import InvalidRequest, RateLimited


class Caller(NamedTuple):
    """Who sent a request: a key's holder, or an address (no key). (NamedTuples here:
    made for every request, and a frozen dataclass costs several times more.)"""

    subject: str  # what its counters are kept under
    limits: Limits
    client: Client | None = None  # None: no key (or a key not required and unknown)

    @property
    def key_id(self) -> str | None:
        return None if self.client is None else self.client.key_id

    def may_use(self, model: str) -> bool:
        return self.client is None or self.client.may_use(model)

    @property
    def priority(self) -> int:
        return self.limits.priority


class Account(NamedTuple):
    """What one request of a keyed client came to, for its usage and metrics."""

    caller: Caller
    model: str
    ok: bool
    latency_ms: float
    usage: tuple[int, int] | None
    limited: str | None = None  # refused by this limit (not served)


def limited(
    refusal_limit: str, message: str, retry_after: float | None, standing: Standing
) -> RateLimited:
    headers = {name.decode(): value.decode() for name, value in ratelimit_headers(standing)}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return RateLimited(message, param=refusal_limit, headers=headers)


class Charge:
    def __init__(
        self,
        store: CounterStore,
        caller: Caller,
        *,
        model: str,
        tokens: int,
        on_done: Callable[[Account], None] | None = None,
    ) -> None:
        self.store = store
        self.caller = caller
        self.model = model
        self.tokens = tokens if caller.limits.limits_tokens else 0
        self.on_done = on_done
        self.standing: Standing | None = None
        self.refused = False  # its 429 carries the x-ratelimit-* headers already
        self.usage: tuple[int, int] | None = None
        self.reached_backend = False  # an answer (or a stream) came from a backend
        self.ok = False
        self.started = time.perf_counter()
        self._counted = caller.limits.any
        # Whether its end has anything to do: a reservation or a place in flight to give
        # back, or a key's usage to account. Else (no key; requests counted at most)
        # `admit` alone will do, and the request path holds nothing.
        self._settles = self._counted and needs_settling(caller.limits)
        self._accounts = on_done is not None and caller.client is not None
        self.holds = self._settles or self._accounts
        self._handed_over = False

    @property
    def key_id(self) -> str | None:
        return self.caller.key_id

    async def __aenter__(self) -> Charge:
        await self.admit()
        return self

    async def admit(self) -> None:
        """Reserve, or raise the 429 naming the limit (entering the charge does this)."""
        if self._counted:
            caller, store = self.caller, self.store
            immediate = store.immediate
            verdict = (
                immediate.admit_now(caller.subject, caller.limits, self.tokens)
                if immediate is not None
                else await store.admit(caller.subject, caller.limits, self.tokens)
            )
            self.standing = verdict.standing
            if verdict.refusal is not None:
                self.refused = True
                refusal = verdict.refusal
                if self._accounts and self.on_done is not None:
                    self.on_done(Account(self.caller, self.model, False, 0.0, None, refusal.limit))
                if refusal.retry_after is None:  # never, as sent: a 400 (SDKs retry a 429)
                    raise InvalidRequest(refusal.message, param=refusal.limit)
                raise limited(refusal.limit, refusal.message, refusal.retry_after, verdict.standing)

    def answered(self, ok: bool, usage: tuple[int, int] | None) -> None:
        """A backend answered (whole, or a stream that ended): its usage, if it said."""
        self.reached_backend = True
        self.ok = ok
        # The last answer's word (an earlier attempt's, a native 404 before a translated
        # stream, must not stand for the one the client got).
        self.usage = usage

    def abandoned(self) -> None:
        """A backend had the request when the client left: it may have generated."""
        self.reached_backend = True

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.standing is None or self.refused:
            return []
        return ratelimit_headers(self.standing)

    def end_later(self) -> Callable[..., Awaitable[None]]:
        """The charge's end, handed over to what holds the answer on (a stream, until it
        ends): leaving the `async with` that admitted the charge then does nothing."""
        self._handed_over = True
        return self._end

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._handed_over:
            await self._end(kind, error, traceback)

    async def _end(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._settles:
            if self.usage is not None:
                used: int | None = self.usage[0] + self.usage[1]
            else:  # reached a backend but no usage known: the reservation stands
                used = None if self.reached_backend else 0
            caller, store = self.caller, self.store
            if (immediate := store.immediate) is not None:
                immediate.settle_later(caller.subject, caller.limits, self.tokens, used)
            else:
                await store.settle(caller.subject, caller.limits, self.tokens, used)
        if self._accounts and self.on_done is not None:
            latency = round((time.perf_counter() - self.started) * 1000, 2)
            self.on_done(
                Account(self.caller, self.model, self.ok and error is None, latency, self.usage)
            )
