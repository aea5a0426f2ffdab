"""Redis, for the state several gateway instances must share quickly (REDIS_URL).

Redis is optional, and never the only copy of anything that must survive: the
database stays the record. What every user of it gets from here:

- one connection pool per process (redis-py's asyncio client), with short
  timeouts: a Redis that does not answer within REDIS_TIMEOUT_SECONDS is
  taken for unreachable, so a request never waits long on it;
- `key(...)`: every key under REDIS_KEY_PREFIX, so several deployments (or
  test runs) can share one Redis;
- `script(...)`: a Lua script, sent once and then called by its SHA (an atomic
  reserve-and-correct of a counter is one script: nothing can interleave);
- `attempt(...)`: the documented failure policy. When Redis cannot be reached,
  REDIS_FAILURE_MODE `fail_open` (the default) runs the caller's fallback (the
  in-process or database way, as without Redis) and `fail_closed` raises
  `RedisUnavailable`, which the caller turns into its refusal (a 429 for a
  limited key). Either way the failure is logged at most once a minute, with
  how many failures that minute had, and the recovery once.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis import asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from shared.logging import get_logger

T = TypeVar("T")
TIMEOUT_SECONDS = 0.25
LOG_EVERY_SECONDS = 60.0

log = get_logger("redis")


class FailureMode(enum.StrEnum):
    OPEN = "fail_open"
    CLOSED = "fail_closed"


class RedisUnavailable(Exception):
    """Redis could not be reached and REDIS_FAILURE_MODE is fail_closed."""


class FailureLog:
    """Failures logged at most once per LOG_EVERY_SECONDS (with the count since the
    last line), and the recovery once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failing = False
        self.last_logged = -float("inf")
        self.unlogged = 0

    def failed(self, error: BaseException, mode: FailureMode) -> bool:
        """Count a failure; whether it was logged."""
        self.failing = True
        self.unlogged += 1
        now = self.clock()
        if now - self.last_logged < LOG_EVERY_SECONDS:
            return False
        log.warning(
            "redis unreachable",
            error_type=type(error).__name__,
            failures=self.unlogged,
            mode=mode.value,
            then="serving, counting locally" if mode is FailureMode.OPEN else "refusing",
        )
        self.last_logged, self.unlogged = now, 0
        return True

    def succeeded(self) -> None:
        if self.failing:
            log.info("redis reachable again", failures_unlogged=self.unlogged)
            self.failing, self.unlogged, self.last_logged = False, 0, -float("inf")


class SharedRedis:
    """A process's Redis: its pool, key prefix, scripts and failure policy."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "multiverse",
        mode: FailureMode = FailureMode.OPEN,
        timeout: float = TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )
        self.prefix = prefix
        self.mode = mode
        self.failures = FailureLog(clock)

    def key(self, *parts: str) -> str:
        """A key under this deployment's prefix: "prefix:part:part"."""
        return ":".join((self.prefix, *parts))

    def script(self, source: str) -> AsyncScript:
        """A Lua script; call it as `await script(keys=[...], args=[...])` inside
        `attempt` (EVALSHA, loading it again if Redis forgot it)."""
        return self.client.register_script(source)

    async def attempt(
        self,
        operation: Callable[[aioredis.Redis], Awaitable[T]],
        *,
        fallback: Callable[[], T],
        fail_open: bool = False,
    ) -> T:
        """`operation` on Redis; when Redis fails, the failure policy (module docstring).
        `fail_open`: this use always falls back (a cache whose record is elsewhere)."""
        try:
            result = await operation(self.client)
        except (RedisError, OSError) as error:
            mode = FailureMode.OPEN if fail_open else self.mode
            self.failures.failed(error, mode)
            if mode is FailureMode.CLOSED:
                raise RedisUnavailable(str(self.mode)) from error
            return fallback()
        self.failures.succeeded()
        return result

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()


def script_call(script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Awaitable[Any]:
    """Call a registered script with its keys (prefixed already) and arguments."""
    return script(keys=list(keys), args=list(args))
