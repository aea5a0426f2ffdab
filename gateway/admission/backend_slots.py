"""A backend's `max_concurrent` across gateway instances: its slots in Redis (REDIS_URL).

Without Redis each worker counts its own requests in flight per registration
(routing/balancer.py's Load), so two instances together could send a server
twice its limit. With Redis, a request to a registration with a max_concurrent
also takes one of its slots there, after the local pick and before the backend
is asked:

- a registration's slots: a sorted set `{prefix}:slots:{registration id}`, one
  member per request in flight, scored by when it lapses (REQUEST_TIMEOUT_SECONDS
  ahead, pushed back every third of that while the request lasts: `keep_alive`),
  so the slots of an instance that died lapse instead of counting for ever;
- taken by one Lua script (lapsed members dropped, counted, added only when
  under the limit: nothing of another instance comes between), released by
  structure (`held`, on the attempt's exit stack, however the attempt ends);
- full: the caller treats the registration as full here (the fair queue, whose
  waiters look again every POLL_SECONDS for slots freed on other instances);
- Redis unreachable: REDIS_FAILURE_MODE. `fail_open` (the default) goes on with
  this worker's own count alone, logged once a minute (redis_client.py);
  `fail_closed` answers 429, "the backend's capacity cannot be checked".

Registrations without a max_concurrent never touch Redis here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from shared.cluster.redis_client import RedisUnavailable, SharedRedis
from shared.errors import RateLimited

UNAVAILABLE_RETRY_SECONDS = 5

# KEYS[1] the registration's set; ARGV: now, limit, member, its lapse, the set's expiry.
TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 1
"""

FULL = None  # `take`'s answer when the registration has no free slot
LOCAL = ""  # `take`'s answer when Redis is away (fail-open): this worker's count decides


class CapacityUnknown(RateLimited):
    """fail_closed, and Redis is unreachable: a limited backend's slots cannot be counted."""

    def __init__(self) -> None:
        super().__init__(
            "the backend's capacity cannot be checked now (the shared counters are "
            f"unreachable); retry in {UNAVAILABLE_RETRY_SECONDS}s",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)},
        )


async def _remove(key: str, member: str, client: Any) -> None:
    await client.zrem(key, member)


async def _renew(key: str, renewed: dict[str, float], kept: int, client: Any) -> None:
    """Members' lapses pushed back, and the set's own expiry with them (a stream may
    outlast it with no other request to the registration)."""
    await client.zadd(key, renewed, xx=True)
    await client.expire(key, kept)


class BackendSlots:
    """One worker's slots of limited registrations in Redis (see the module's docstring)."""

    def __init__(
        self, redis: SharedRedis, *, lapse: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.lapse = lapse
        self.clock = clock
        self.take_script = redis.script(TAKE)
        self.instance = uuid.uuid4().hex[:12]
        self.numbers = itertools.count()
        self.mine: dict[str, set[str]] = {}  # registration id: this worker's members
        self.releasing: set[asyncio.Task[None]] = set()  # (a cancelled exit's removal)

    async def take(self, registration_id: str, limit: int) -> str | None:
        """A slot's member; FULL when the registration has `limit` in flight already;
        LOCAL when Redis is away and fail-open. CapacityUnknown when fail-closed."""
        now = self.clock()
        member = f"{self.instance}:{next(self.numbers)}"
        key = self.redis.key("slots", registration_id)
        args: list[str | int] = [
            repr(now),
            limit,
            member,
            repr(now + self.lapse),
            int(self.lapse) + 60,
        ]
        try:
            taken = await self.redis.attempt(
                lambda client: self.take_script(keys=[key], args=args), fallback=lambda: None
            )
        except RedisUnavailable:
            self._abandon(key, member)
            raise CapacityUnknown() from None
        except asyncio.CancelledError:
            self._abandon(key, member)
            raise
        if taken is None:
            # The script may have run and only its answer been lost (a timeout): the
            # member would hold a slot on every instance for a whole lapse.
            self._abandon(key, member)
            return LOCAL
        if not int(taken):
            return FULL
        self.mine.setdefault(registration_id, set()).add(member)
        return member

    def _abandon(self, key: str, member: str) -> None:
        """Remove, in the background and quietly, a member whose taking did not come
        back (it may or may not be in the set)."""
        removal = asyncio.ensure_future(self._remove_quietly(key, member))
        self.releasing.add(removal)
        removal.add_done_callback(self.releasing.discard)

    async def _remove_quietly(self, key: str, member: str) -> None:
        with contextlib.suppress(RedisUnavailable):
            await self.redis.attempt(functools.partial(_remove, key, member), fallback=lambda: None)

    async def release(self, registration_id: str, member: str) -> None:
        """Give the slot back (fail-closed or not: a removal not written lapses in time)."""
        if member == LOCAL:
            return
        members = self.mine.get(registration_id)
        if members is not None:
            members.discard(member)
            if not members:
                del self.mine[registration_id]
        operation = functools.partial(_remove, self.redis.key("slots", registration_id), member)
        with contextlib.suppress(RedisUnavailable):
            await self.redis.attempt(operation, fallback=lambda: None)

    @contextlib.asynccontextmanager
    async def held(
        self, registration_id: str, limit: int, then: Callable[[], None]
    ) -> AsyncIterator[bool]:
        """A slot for the block (False: none was free, and nothing is held); at its end
        the slot is given back, and then `then` runs (forward.py: the fair queue's
        `freed`, whose next waiter may take it at once)."""
        member = await self.take(registration_id, limit)
        if member is None:  # FULL
            yield False
            return
        try:
            yield True
        finally:
            # Removed even when the exit is cancelled (a client gone): the slot must not
            # stay taken for a whole lapse.
            removal = asyncio.ensure_future(self.release(registration_id, member))
            self.releasing.add(removal)
            removal.add_done_callback(self.releasing.discard)
            try:
                await asyncio.shield(removal)
            finally:
                then()

    async def keep_alive(self) -> None:
        """Until cancelled: every third of the lapse, push back the lapse of this worker's
        slots still held (a stream may outlast REQUEST_TIMEOUT_SECONDS); only the slots
        of an instance that died lapse."""
        while True:
            await asyncio.sleep(max(1.0, self.lapse / 3))
            expiry = self.clock() + self.lapse
            for registration_id, members in list(self.mine.items()):
                key = self.redis.key("slots", registration_id)
                renewed = dict.fromkeys(members, expiry)
                with contextlib.suppress(RedisUnavailable):
                    await self.redis.attempt(
                        functools.partial(_renew, key, renewed, int(self.lapse) + 60),
                        fallback=lambda: None,
                    )
