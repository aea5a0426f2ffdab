"""One call in flight per key: everyone who asks meanwhile awaits the same result.

Used where a burst of requests would otherwise each do the same slow thing: a
DNS look-up of one name (shared/upstream/dialing.py), a reload of the registry
(gateway/routing/registry.py). A caller that is cancelled leaves the call running
for the others (shielded; `asyncio.shield` also retrieves a failure nobody
awaits any more).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[T]] = {}

    async def run(self, key: K, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`'s result, sharing a call already in flight for `key`."""
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = asyncio.ensure_future(call())
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        return await asyncio.shield(flight)
