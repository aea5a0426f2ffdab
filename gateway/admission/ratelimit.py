"""Per-client rate limiting: a token bucket per client, refilled continuously.

`take_token` is the pure policy; `RateLimiter` keeps the buckets, at most
`max_clients` of them: past that the least recently seen client is forgotten
(it comes back with a full bucket, which it would mostly have by then). A
client that rotates through many addresses pushes out only clients idler
than all of them, never everyone at once; `client_of` counts an IPv6
client by its /64, the block one host is given.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
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


def client_of(host: str) -> str:
    """The rate limit's key for a client address: an IPv6 address by its /64."""
    if ":" not in host:
        return f"ip:{host}"
    try:
        network = ipaddress.IPv6Network(f"{host}/64", strict=False)
    except ValueError:
        return f"ip:{host}"
    return f"ip:{network}"


class RateLimiter:
    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.max_clients = max_clients
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def check(self, client: str) -> float:
        """0 if `client` may go ahead, else the seconds to wait."""
        bucket, wait = take_token(
            self.buckets.get(client), now=self.clock(), per_minute=self.per_minute
        )
        self.buckets[client] = bucket
        self.buckets.move_to_end(client)
        if len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)  # the least recently seen
        return wait
