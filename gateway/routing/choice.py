"""The backends one client request may go to, and the pick among them.

One `Choice` per request, asked at each try, and at each look while the request
waits for a slot (gateway/admission/fair_queue.py): the snapshot, the tried and
ejected backends and the paths backends lack may change between two asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.routing import policy as routing
from gateway.routing.balancer import Balancer
from gateway.routing.policy import Backend
from gateway.routing.prefix_key import hint_for
from gateway.routing.registry import SnapshotHolder
from gateway.routing.reported.scorer import NO_HINT, Hint


class Choice:
    def __init__(
        self,
        holder: SnapshotHolder,
        balancer: Balancer,
        *,
        model: str,
        path: str,
        tags: frozenset[str],
        streaming: bool,
        owner: str | None = None,
        hint: Hint = NO_HINT,
    ) -> None:
        self.holder = holder
        self.balancer = balancer
        self.model = model
        self.path = path
        self.tags = tags
        self.streaming = streaming
        self.owner = owner  # the registration holding a Responses conversation
        self.hint = hint  # what `auto` reads of the request (its affinity key, its size)
        self.tried: list[str] = []  # registration ids, in the order tried
        # What the last pick saw: the model's backends, and those thought to lack the path.
        self.backends: tuple[Backend, ...] = ()
        self.lacking: frozenset[str] = frozenset()

    def _offered(self) -> tuple[Backend, ...]:
        backends = self.holder.current.backends(self.model)
        if self.owner is not None:  # (gone from the registry: any backend may answer)
            owner = self.owner
            backends = tuple(b for b in backends if b.registration_id == owner) or backends
        return backends

    def _excluded(self) -> frozenset[str]:
        return frozenset(self.tried) | self.balancer.learned.ejected_for(self.model)

    def pick(self, exclude: frozenset[str] = frozenset()) -> Backend | None:
        """A backend with a free slot, not tried yet nor ejected nor in `exclude`; one
        thought to lack the path only when no other is left."""
        self.backends = backends = self._offered()
        excluded = self._excluded() | exclude
        self.lacking = lacking = self.balancer.learned.lacking(self.model, self.path)
        pick = self.balancer.pick
        backend = pick(
            backends,
            required_tags=self.tags,
            exclude=excluded | lacking,
            streaming=self.streaming,
            hint=self.hint,
        )
        if backend is None and lacking:  # only backends thought to lack it: try them
            backend = pick(
                backends,
                required_tags=self.tags,
                exclude=excluded,
                streaming=self.streaming,
                hint=self.hint,
            )
        return backend

    def usable(self) -> frozenset[str]:
        """The registrations the request could use were none of them full: when pick
        finds none and this is not empty, the pool is full (wait in the fair queue);
        empty, nothing healthy is left to wait for."""
        eligible = routing.eligible(
            self._offered(),
            required_tags=self.tags,
            exclude=self._excluded(),
            streaming=self.streaming,
        )
        return frozenset(backend.registration_id for backend in eligible)

    def offered_elsewhere(self, attempts: int) -> bool:
        """Whether a request the backend just tried lacks the endpoint for may still go
        to another: one a pick could choose now (healthy, not draining, not ejected, not
        full, with the request's tags), untried, not thought to lack the path, within
        `attempts`. A draining or full server counted here turned a translatable request
        into a 404 (the next pick found nothing free, and the loop ended)."""
        if len(self.tried) >= attempts:
            return False
        others = routing.eligible(
            self._offered(),
            required_tags=self.tags,
            exclude=self._excluded() | self.lacking,
            loads=self.balancer.loads,
            streaming=self.streaming,
        )
        return bool(others)

    def explain(self) -> str:
        """Why nothing could be picked, in words for the client."""
        return self.balancer.explain(
            self._offered(), required_tags=self.tags, streaming=self.streaming
        )


def request_hint(
    strategy: str,
    backends: tuple[Backend, ...],
    members: Mapping[str, Any] | None,
    session: str | None,
    size: int,
) -> Hint:
    """What `auto` reads of the request (its affinity key and size), made only when it
    has a choice to make."""
    if strategy != "auto" or len(backends) < 2:
        return NO_HINT
    return hint_for(members, session, size)
