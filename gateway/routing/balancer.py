"""The stateful side of routing: turn counters, in-flight counts, observed latency.

One Balancer per gateway process (on the app context). It feeds the pure
policies in `policy.py` and `outlier.py` and remembers what happened; it does
no I/O.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from gateway.routing import policy as routing
from gateway.routing.learned import Learned
from gateway.routing.outlier import OutlierPolicy
from gateway.routing.policy import Backend, Draws, Load
from shared.logging import get_logger

log = get_logger("api")


class Balancer:
    def __init__(
        self,
        strategy: str,
        slow_start_seconds: float,
        *,
        learned: Learned | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if strategy not in routing.STRATEGIES:
            raise ValueError(f"unknown routing strategy {strategy!r}")
        self.strategy = strategy
        self.slow_start_seconds = slow_start_seconds
        self.clock = clock
        self.rng = rng
        self.loads: dict[str, Load] = {}
        self.turns: dict[str, int] = {}
        # Outlier state and the rest of what is learned, by (registration, model).
        self.learned = learned or Learned(OutlierPolicy(), monotonic)

    def pick(
        self,
        backends: tuple[Backend, ...],
        *,
        required_tags: frozenset[str],
        exclude: frozenset[str],
        streaming: bool,
    ) -> Backend | None:
        if len(backends) == 1:
            # The common case of a model with one backend: nothing to choose
            # (every strategy returns the only candidate).
            only = backends[0]
            load = self.loads.get(only.registration_id, routing.NO_LOAD)
            if routing.is_eligible(
                only, required_tags=required_tags, exclude=exclude, load=load, streaming=streaming
            ):
                return only
            return None
        candidates = routing.best_tier(
            routing.eligible(
                backends,
                required_tags=required_tags,
                exclude=exclude,
                loads=self.loads,
                streaming=streaming,
            )
        )
        if not candidates:
            return None
        model = candidates[0].model_name
        turn = self.turns.get(model, 0)
        self.turns[model] = turn + 1
        return routing.choose(
            self.strategy,
            candidates,
            loads=self.loads,
            now=self.clock(),
            slow_start_seconds=self.slow_start_seconds,
            turn=turn,
            draws=Draws(self.rng(), self.rng(), self.rng()),
        )

    def explain(
        self, backends: tuple[Backend, ...], *, required_tags: frozenset[str], streaming: bool
    ) -> str:
        return routing.explain_no_backend(
            backends, required_tags=required_tags, loads=self.loads, streaming=streaming
        )

    def faulted(self, backend: Backend, peers: tuple[Backend, ...], reason: str) -> bool:
        """A fault of `backend` for its model; True when it ejected the pair."""
        seconds = self.learned.faulted(backend, peers)
        if seconds is None:
            return False
        log.warning(
            "backend ejected from routing",
            registration_id=backend.registration_id,
            model=backend.model_name,
            seconds=round(seconds, 1),
            reason=reason,
        )
        return True

    def in_flight(self) -> dict[str, int]:
        """Requests on their way to or from each backend now (this process)."""
        return {backend_id: load.in_flight for backend_id, load in self.loads.items()}

    def started(self, backend_id: str) -> None:
        load = self.loads.get(backend_id, routing.NO_LOAD)
        self.loads[backend_id] = Load(load.in_flight + 1, load.latency_ms)

    def finished(self, backend_id: str, latency_ms: float | None) -> None:
        """One attempt ended; `latency_ms` is given when it succeeded."""
        load = self.loads.get(backend_id, routing.NO_LOAD)
        latency = (
            load.latency_ms
            if latency_ms is None
            else routing.moving_average(load.latency_ms, latency_ms)
        )
        self.loads[backend_id] = Load(max(0, load.in_flight - 1), latency)
