"""The counter store of several machines: the clients' counters in Redis (REDIS_URL).

Several gateway instances (each with its workers) share one Redis, so a key's 60
requests a minute are 60 for all of them. Each decision is one Lua script run
atomically by Redis: it brings the subject's buckets to now, checks the limits
in the same order as `counters.admit`, and spends or not, in one round trip
(nothing of another instance can come between the check and the spending).
The message and the figures of the answer are then made by the same pure code
as on one machine (counters.py), from the slot the script returns.

- A subject's counts: a hash `{prefix}:counters:{subject}` (requests and tokens
  bucket levels and when they were last brought up to date; the day and the
  tokens used in it), expiring two days after its last use.
- Its requests in flight (only under a max_concurrent limit): a sorted set of
  one member per request, scored by when it lapses (REQUEST_TIMEOUT_SECONDS
  ahead, pushed back every third of that while the request lasts, a long stream
  too: `keep_alive`): an instance that dies holding requests has them lapse,
  rather than count for ever.
- Redis unreachable: REDIS_FAILURE_MODE. `fail_open` (the default) decides on
  this machine's counters (shared_counters.py) and says so in the log once a
  minute; `fail_closed` answers a limited key 429 "limits cannot be checked".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.admission.counters import (
    DAY_SECONDS,
    ImmediateStore,
    Refusal,
    Slot,
    Standing,
    Verdict,
    brought_to,
    refusal_for,
    standing_of,
)
from gateway.admission.limits import Limits
from shared.cluster.redis_client import RedisUnavailable, SharedRedis

UNAVAILABLE_RETRY_SECONDS = 5.0
KEPT_SECONDS = 2 * DAY_SECONDS

# The buckets brought to now, as counters.brought_to does; an absent level is a full
# bucket (never used, or no limit until now); 0 per minute: no limit, level dropped.
_LEVELS = """
local now = tonumber(ARGV[1])
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local tpd, maxc = tonumber(ARGV[4]), tonumber(ARGV[5])
local h = redis.call('HMGET', KEYS[1], 'r', 'ra', 't', 'ta', 'd', 'du')
local function refill(level, at, per_minute)
  if per_minute == 0 then return nil end
  if level == false then return per_minute end
  local value = tonumber(level) + math.max(0, now - tonumber(at)) * per_minute / 60
  if value > per_minute then return per_minute end
  return value
end
local r = refill(h[1], h[2], rpm)
local t = refill(h[3], h[4], tpm)
local day = math.floor(now / 86400)
local used = 0
if h[5] ~= false and tonumber(h[5]) == day then used = tonumber(h[6]) end
local flying = 0
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  flying = redis.call('ZCARD', KEYS[2])
end
"""

_REPLY = """
local function text(value)
  if value == nil then return '' end
  return string.format('%.17g', value)
end
"""

ADMIT = (
    _LEVELS
    + _REPLY
    + """
local tokens = tonumber(ARGV[6])
local refused = 0
if maxc > 0 and flying >= maxc then refused = 1
elseif rpm > 0 and r < 1 then refused = 2
elseif tpm > 0 and tokens > tpm then refused = 3
elseif tpm > 0 and t < tokens then refused = 4
elseif tpd > 0 and used + tokens > tpd then refused = 5
end
if refused == 0 then
  if rpm > 0 then r = r - 1 end
  if tpm > 0 then t = t - tokens end
  if tpd > 0 then used = used + tokens end
  if maxc > 0 then
    redis.call('ZADD', KEYS[2], tonumber(ARGV[8]), ARGV[7])
    redis.call('EXPIRE', KEYS[2], tonumber(ARGV[9]))
    flying = flying + 1
  end
end
redis.call('HSET', KEYS[1], 'ra', text(now), 'ta', text(now), 'd', day, 'du', used)
if r == nil then redis.call('HDEL', KEYS[1], 'r') else redis.call('HSET', KEYS[1], 'r', text(r)) end
if t == nil then redis.call('HDEL', KEYS[1], 't') else redis.call('HSET', KEYS[1], 't', text(t)) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[10]))
return {refused, text(r), text(t), day, used, flying}
"""
)

SETTLE = (
    _LEVELS
    + _REPLY
    + """
local change = tonumber(ARGV[6])
if tpm > 0 then t = math.min(tpm, t - change) end
if tpd > 0 then used = math.max(0, used + change) end
if ARGV[7] ~= '' then redis.call('ZREM', KEYS[2], ARGV[7]) end
redis.call('HSET', KEYS[1], 'ra', text(now), 'ta', text(now), 'd', day, 'du', used)
if r == nil then redis.call('HDEL', KEYS[1], 'r') else redis.call('HSET', KEYS[1], 'r', text(r)) end
if t == nil then redis.call('HDEL', KEYS[1], 't') else redis.call('HSET', KEYS[1], 't', text(t)) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[10]))
return {0, text(r), text(t), day, used, flying}
"""
)

STANDING = (
    _LEVELS
    + _REPLY
    + """
return {0, text(r), text(t), day, used, flying}
"""
)


def slot_of(reply: list[Any], now: float) -> tuple[int, Slot]:
    """The script's reply: (refusal code, the slot after it)."""
    code, requests, tokens, day, used, flying = reply
    return int(code), Slot(
        float(requests) if requests != "" else math.inf,
        now,
        float(tokens) if tokens != "" else math.inf,
        now,
        int(day),
        int(used),
        int(flying),
    )


async def _renew(key: str, renewed: dict[str, float], kept: int, client: Any) -> None:
    """Members' lapses pushed back, and the set's own expiry with them (a stream may
    outlast it while its key sends nothing else)."""
    await client.zadd(key, renewed, xx=True)
    await client.expire(key, kept)


class RedisCounters:
    """CounterStore over Redis (see the module's docstring)."""

    immediate = None  # (it decides in Redis: awaited)

    def __init__(
        self,
        redis: SharedRedis,
        local: ImmediateStore,
        *,
        in_flight_lapse: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.local = local
        self.lapse = in_flight_lapse
        self.clock = clock
        self.admit_script = redis.script(ADMIT)
        self.settle_script = redis.script(SETTLE)
        self.standing_script = redis.script(STANDING)
        self.instance = uuid.uuid4().hex[:12]
        self.numbers = itertools.count()
        # Per subject, the members of this process's admitted requests in flight, in
        # order ("" for one admitted on this machine's counters while Redis was away).
        self.flying: dict[str, deque[str]] = {}

    def _keys(self, subject: str) -> list[str]:
        return [self.redis.key("counters", subject), self.redis.key("flying", subject)]

    def _args(self, limits: Limits, now: float, *extra: str | int) -> list[str | int]:
        return [
            repr(now),
            limits.requests_per_minute,
            limits.tokens_per_minute,
            limits.tokens_per_day,
            limits.max_concurrent,
            *extra,
        ]

    async def admit(self, subject: str, limits: Limits, tokens: int) -> Verdict:
        now = self.clock()
        member = f"{self.instance}:{next(self.numbers)}" if limits.max_concurrent else ""
        args = self._args(limits, now, tokens, member, repr(now + self.lapse))
        args += [int(self.lapse) + 60, KEPT_SECONDS]
        keys = self._keys(subject)
        try:
            reply = await self.redis.attempt(
                lambda client: self.admit_script(keys=keys, args=args), fallback=lambda: None
            )
        except RedisUnavailable:
            standing = standing_of(brought_to(Slot(), limits, now), limits, now)
            return Verdict(
                standing,
                Refusal(
                    "counters_unavailable",
                    "the limits cannot be checked now (the shared counters are unreachable)",
                    UNAVAILABLE_RETRY_SECONDS,
                ),
            )
        if reply is None:  # fail-open: this machine's counters decide meanwhile
            verdict = self.local.admit_now(subject, limits, tokens)
            if verdict.refusal is None and limits.max_concurrent:
                self.flying.setdefault(subject, deque()).append("")
            return verdict
        code, slot = slot_of(reply, now)
        if code == 0:
            if member:
                self.flying.setdefault(subject, deque()).append(member)
            return Verdict(standing_of(slot, limits, now))
        refusal = refusal_for(slot, limits, tokens, now) or Refusal(
            "requests_per_minute", "a limit was reached", 1.0
        )
        return Verdict(standing_of(slot, limits, now), refusal)

    async def settle(self, subject: str, limits: Limits, reserved: int, used: int | None) -> None:
        member = ""
        if limits.max_concurrent:
            mine = self.flying.get(subject)
            if mine:
                member = mine.popleft()
                if not mine:
                    del self.flying[subject]
                if member == "":  # admitted locally: settled there
                    self.local.settle_later(subject, limits, reserved, used)
                    return
        change = 0 if used is None else used - reserved
        if not member and (change == 0 or not (limits.tokens_per_minute or limits.tokens_per_day)):
            return  # nothing to write: the buckets refill by the clock, read at the next admit
        now = self.clock()
        args = self._args(limits, now, change, member, "", 0, KEPT_SECONDS)
        keys = self._keys(subject)
        # Fail-closed refuses new requests; an end not written lapses in time.
        with contextlib.suppress(RedisUnavailable):
            await self.redis.attempt(
                lambda client: self.settle_script(keys=keys, args=args),
                fallback=lambda: None,
            )

    async def keep_alive(self) -> None:
        """Until cancelled: every third of the lapse, push back the lapse of this
        process's requests still in flight (a stream may run longer than any timeout
        but its idle one); only the requests of an instance that died lapse."""
        while True:
            await asyncio.sleep(max(1.0, self.lapse / 3))
            expiry = self.clock() + self.lapse
            held = [(subject, list(members)) for subject, members in self.flying.items()]
            for subject, members in held:
                renewed = {member: expiry for member in members if member}
                if not renewed:
                    continue
                with contextlib.suppress(RedisUnavailable):
                    await self.redis.attempt(
                        functools.partial(
                            _renew, self._keys(subject)[1], renewed, int(self.lapse) + 60
                        ),
                        fallback=lambda: None,
                    )

    async def standing(self, subject: str, limits: Limits) -> Standing:
        now = self.clock()
        args = self._args(limits, now, 0, "", "", 0, KEPT_SECONDS)
        keys = self._keys(subject)
        try:
            reply = await self.redis.attempt(
                lambda client: self.standing_script(keys=keys, args=args), fallback=lambda: None
            )
        except RedisUnavailable:
            reply = None
        if reply is None:
            return self.local.standing_now(subject, limits)
        _, slot = slot_of(reply, now)
        return standing_of(slot, limits, now)
