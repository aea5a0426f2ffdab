"""Per-client rate limiting: a token bucket per client, refilled continuously.

`take_token` is the pure policy; `RateLimiter` keeps the buckets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_CLIENTS = 10_000


@dataclass(frozen=True)
class Bucket:
    tokens: float
    updated: float


def take_token(bucket: Bucket | None, *, now: float, per_minute: int) -> tuple[Bucket, float]:
    """Spend one token; return the new bucket and 0, or the seconds until one is available."""
    capacity = float(per_minute)
    rate = per_minute / 60.0
    if bucket is None:
        tokens = capacity
    else:
        tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
    if tokens >= 1:
        return Bucket(tokens - 1, now), 0.0
    return Bucket(tokens, now), (1 - tokens) / rate


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def check(self, client: str) -> float:
        """0 if `client` may go ahead, else the seconds to wait."""
        now = self.clock()
        if len(self.buckets) >= MAX_CLIENTS:
            self._forget_full(now)
        bucket, wait = take_token(self.buckets.get(client), now=now, per_minute=self.per_minute)
        self.buckets[client] = bucket
        return wait

    def _forget_full(self, now: float) -> None:
        """Drop clients whose bucket has refilled: they would start full anyway."""
        full_after = 60.0
        for client, bucket in list(self.buckets.items()):
            if now - bucket.updated >= full_after:
                del self.buckets[client]
        if len(self.buckets) >= MAX_CLIENTS:  # still too many: start over, lenient
            self.buckets.clear()
