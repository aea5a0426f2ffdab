"""A client's counters and the policy that reads them: pure, tested as tables.

Per subject (a key, or an address without keys) the store keeps one `Slot`:
- requests per minute: a token bucket of `requests_per_minute`, refilled
  continuously (a client may burst to its minute's worth, then one request per
  60/rpm seconds);
- tokens per minute: a bucket of `tokens_per_minute`; a request takes its
  reservation (max_tokens, or TOKEN_RESERVATION_DEFAULT, plus an estimate of
  the prompt) before it is forwarded, and the difference to the answer's usage
  is given back or taken after (the level may go below zero: the next request
  then waits). A limit is overshot by at most the requests in flight's
  under-estimates, never by a request admitted on an empty bucket;
- tokens per UTC day: a count that restarts at midnight UTC, reserved and
  corrected the same way;
- requests in flight (counted only under a max_concurrent limit): per worker
  (`columns`), so a worker that dies takes its counts with it (the store clears
  a dead worker's column).

`admit` decides and spends in one step; the store runs it under its lock, so
two workers never both spend the last token. `CounterStore` is the interface
the request path uses (async: a store on another machine, Redis, fits it).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Protocol

from gateway.admission.limits import Limits

DAY_SECONDS = 86_400


class Slot(NamedTuple):
    """One subject's counters. (NamedTuples: the request path makes a few per request,
    and a frozen dataclass costs several times as much to build.)"""

    requests: float = math.inf  # the requests bucket's level (inf: never used)
    requests_at: float = 0.0
    tokens: float = math.inf  # the tokens-per-minute bucket's level
    tokens_at: float = 0.0
    day: int = 0  # the UTC day (epoch seconds // 86400) day_used counts
    day_used: int = 0
    in_flight: int = 0  # all workers'


class Standing(NamedTuple):
    """What the x-ratelimit-* headers and GET /v1/me report (after this request)."""

    limits: Limits
    requests_remaining: int | None = None  # None: no such limit
    requests_reset: float = 0.0  # seconds until the bucket is full again
    tokens_remaining: int | None = None
    tokens_reset: float = 0.0
    day_remaining: int | None = None
    day_reset: float = 0.0
    in_flight: int = 0


class Refusal(NamedTuple):
    """Which limit refused, and when to come back (None: never, as sent)."""

    limit: str  # requests_per_minute, tokens_per_minute, tokens_per_day, max_concurrent
    message: str
    retry_after: float | None


class Verdict(NamedTuple):
    standing: Standing
    refusal: Refusal | None = None


def _refill(level: float, at: float, per_minute: int, now: float) -> float:
    if not per_minute:
        return math.inf  # no limit: the bucket starts full when one is set
    if level == math.inf:
        return float(per_minute)
    if now > at:
        level += (now - at) * per_minute / 60.0
    return level if level < per_minute else float(per_minute)


def brought_to(slot: Slot, limits: Limits, now: float) -> Slot:
    """The slot brought to `now`: buckets refilled, the day started again at midnight."""
    day = int(now // DAY_SECONDS)
    requests, requests_at, level, level_at, slot_day, used, in_flight = slot
    rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
    return Slot(
        _refill(requests, requests_at, rpm, now) if rpm else math.inf,
        now,
        _refill(level, level_at, tpm, now) if tpm else math.inf,
        now,
        day,
        used if slot_day == day else 0,
        in_flight,
    )


def standing_of(slot: Slot, limits: Limits, now: float) -> Standing:
    """What is left of each limit in a slot brought to `now`."""
    rpm, tpm, tpd = limits.requests_per_minute, limits.tokens_per_minute, limits.tokens_per_day
    return Standing(
        limits,
        max(0, math.floor(slot.requests)) if rpm else None,
        (rpm - slot.requests) * 60.0 / rpm if rpm else 0.0,
        max(0, math.floor(slot.tokens)) if tpm else None,
        (tpm - slot.tokens) * 60.0 / tpm if tpm else 0.0,
        max(0, tpd - slot.day_used) if tpd else None,
        (slot.day + 1) * DAY_SECONDS - now if tpd else 0.0,
        slot.in_flight,
    )


def refusal_for(slot: Slot, limits: Limits, tokens: int, now: float) -> Refusal | None:
    if limits.max_concurrent and slot.in_flight >= limits.max_concurrent:
        return Refusal(
            "max_concurrent",
            f"concurrent requests limit of {limits.max_concurrent} reached",
            1.0,
        )
    rpm = limits.requests_per_minute
    if rpm and slot.requests < 1:
        return Refusal(
            "requests_per_minute",
            f"rate limit of {rpm} requests per minute reached",
            (1 - slot.requests) * 60.0 / rpm,
        )
    tpm = limits.tokens_per_minute
    if tpm and tokens > tpm:
        return Refusal(
            "tokens_per_minute",
            f"this request reserves {tokens} tokens (max_tokens and the prompt), more than "
            f"the limit of {tpm} tokens per minute: lower max_tokens",
            None,
        )
    if tpm and slot.tokens < tokens:
        return Refusal(
            "tokens_per_minute",
            f"rate limit of {tpm} tokens per minute reached (this request reserves {tokens})",
            (tokens - slot.tokens) * 60.0 / tpm,
        )
    tpd = limits.tokens_per_day
    if tpd and slot.day_used + tokens > tpd:
        too_big = tokens > tpd
        return Refusal(
            "tokens_per_day",
            f"this request reserves {tokens} tokens, more than the limit of {tpd} tokens "
            "per day: lower max_tokens"
            if too_big
            else f"limit of {tpd} tokens per day reached (this request reserves {tokens}, "
            f"{max(0, tpd - slot.day_used)} are left today; it restarts at 00:00 UTC)",
            None if too_big else (slot.day + 1) * DAY_SECONDS - now,
        )
    return None


def admit(slot: Slot, limits: Limits, tokens: int, now: float) -> tuple[Slot, Verdict]:
    """Decide one request reserving `tokens`; the slot after it, and the verdict.
    (Every request of a limited client: the spending is written out plainly.)"""
    current = brought_to(slot, limits, now)
    refusal = refusal_for(current, limits, tokens, now)
    if refusal is not None:
        return current, Verdict(standing_of(current, limits, now), refusal)
    requests, _, level, _, day, used, in_flight = current
    rpm, tpm, tpd = limits.requests_per_minute, limits.tokens_per_minute, limits.tokens_per_day
    if rpm:
        requests -= 1
    if tpm:
        level -= tokens
    if tpd:
        used += tokens
    if limits.max_concurrent:
        in_flight += 1
    spent = Slot(requests, now, level, now, day, used, in_flight)
    # standing_of(spent, limits, now), written out: this is every request.
    standing = Standing(
        limits,
        (int(requests) if requests > 0 else 0) if rpm else None,
        (rpm - requests) * 60.0 / rpm if rpm else 0.0,
        (math.floor(level) if level > 0 else 0) if tpm else None,
        (tpm - level) * 60.0 / tpm if tpm else 0.0,
        (tpd - used if tpd > used else 0) if tpd else None,
        (day + 1) * DAY_SECONDS - now if tpd else 0.0,
        in_flight,
    )
    return spent, Verdict(standing)


def settle(slot: Slot, limits: Limits, reserved: int, used: int | None, now: float) -> Slot:
    """A request ended: its reservation corrected to what it used (kept when unknown),
    and its place in flight given back."""
    return settle_many(slot, limits, 0 if used is None else used - reserved, 1, now)


def settle_many(slot: Slot, limits: Limits, change: int, ended: int, now: float) -> Slot:
    """`ended` requests ended, having used `change` tokens more than they reserved (a
    negative change gives tokens back): what `settle` does for each, at once. (The slot
    is brought to `now` as brought_to does, written out: this is every request's end.)"""
    requests, requests_at, level, level_at, day, used, in_flight = slot
    rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
    today = int(now // DAY_SECONDS)
    if day != today:
        used = 0
    return Slot(
        _refill(requests, requests_at, rpm, now) if rpm else math.inf,
        now,
        min(float(tpm), _refill(level, level_at, tpm, now) - change) if tpm else math.inf,
        now,
        today,
        max(0, used + change) if limits.tokens_per_day else used,
        max(0, in_flight - ended) if limits.max_concurrent else in_flight,
    )


def needs_settling(limits: Limits) -> bool:
    """Whether a request's end changes its counters: a reservation to correct, or a
    place in flight to give back (requests per minute alone: nothing)."""
    return bool(limits.tokens_per_minute or limits.tokens_per_day or limits.max_concurrent)


def duration(seconds: float) -> str:
    """OpenAI's form of a reset time: `1s`, `6m0s`, `20ms`, `1h2m3s`."""
    return _duration(seconds).decode()


def _duration(seconds: float) -> bytes:
    if seconds < 1:
        return b"%dms" % (math.ceil(seconds * 1000) if seconds > 0 else 0)
    return _whole_duration(math.ceil(seconds))


@functools.lru_cache(maxsize=4096)
def _whole_duration(whole: int) -> bytes:
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return b"%dh%dm%ds" % (hours, minutes, secs)
    if minutes:
        return b"%dm%ds" % (minutes, secs)
    return b"%ds" % secs


_HEADER_NAMES = tuple(
    (b"x-ratelimit-limit-" + name, b"x-ratelimit-remaining-" + name, b"x-ratelimit-reset-" + name)
    for name in (b"requests", b"tokens", b"tokens-day")
)


@functools.lru_cache(maxsize=1024)
def _limit_values(limits: Limits) -> tuple[bytes, bytes, bytes]:
    return (
        b"%d" % limits.requests_per_minute,
        b"%d" % limits.tokens_per_minute,
        b"%d" % limits.tokens_per_day,
    )


def ratelimit_headers(standing: Standing) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers for the limits a client has (requests and tokens
    per minute), and the same three for tokens per day (`-tokens-day`). On every
    answer, so written plainly: a few microseconds."""
    requests, tokens, day = _limit_values(standing.limits)
    headers: list[tuple[bytes, bytes]] = []
    if standing.requests_remaining is not None:
        names = _HEADER_NAMES[0]
        headers += (
            (names[0], requests),
            (names[1], b"%d" % standing.requests_remaining),
            (names[2], _duration(standing.requests_reset)),
        )
    if standing.tokens_remaining is not None:
        names = _HEADER_NAMES[1]
        headers += (
            (names[0], tokens),
            (names[1], b"%d" % standing.tokens_remaining),
            (names[2], _duration(standing.tokens_reset)),
        )
    if standing.day_remaining is not None:
        names = _HEADER_NAMES[2]
        headers += (
            (names[0], day),
            (names[1], b"%d" % standing.day_remaining),
            (names[2], _duration(standing.day_reset)),
        )
    return headers


class CounterStore(Protocol):
    """Where the counters live: this machine's shared memory (shared_counters.py), or a
    store every instance shares."""

    @property
    def immediate(self) -> ImmediateStore | None:
        """The store itself when it decides at once, in this process: the request path
        then calls its synchronous methods (no coroutine to make and await per call)."""

    async def admit(self, subject: str, limits: Limits, tokens: int) -> Verdict: ...

    async def settle(
        self, subject: str, limits: Limits, reserved: int, used: int | None
    ) -> None: ...

    async def standing(self, subject: str, limits: Limits) -> Standing: ...


class ImmediateStore:
    """A store that decides at once, in this process (one worker's dict, this machine's
    table): its CounterStore methods are its synchronous ones, which the Redis store
    also calls when Redis is away, and seed_day, with which a fresh gateway is given
    back each key's tokens of the day."""

    @property
    def immediate(self) -> ImmediateStore:
        return self

    def admit_now(self, subject: str, limits: Limits, tokens: int) -> Verdict:
        raise NotImplementedError

    def settle_later(self, subject: str, limits: Limits, reserved: int, used: int | None) -> None:
        """Note a request's end (written at once, or with its loop turn's others)."""
        raise NotImplementedError

    def standing_now(self, subject: str, limits: Limits) -> Standing:
        raise NotImplementedError

    def seed_day(self, subject: str, used: int) -> None:
        raise NotImplementedError

    async def admit(self, subject: str, limits: Limits, tokens: int) -> Verdict:
        return self.admit_now(subject, limits, tokens)

    async def settle(self, subject: str, limits: Limits, reserved: int, used: int | None) -> None:
        self.settle_later(subject, limits, reserved, used)

    async def standing(self, subject: str, limits: Limits) -> Standing:
        return self.standing_now(subject, limits)
