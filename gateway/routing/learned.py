"""What this gateway process has learned about each backend, keyed by (registration, model).

One registration serves several models (a vLLM with LoRA adapters, an Ollama
with ten models): three faults of model A say nothing of model B on the same
server, and B's only server must not be ejected for them; an Ollama server
that lacks /v1/rerank for one model may be asked for another's. So every fact
here is about a `BackendKey`, and each has its lifetime:

- outlier state (faults in a row, ejections; outlier.py): an ejection ends only
  with time, the count with the next answer;
- an endpoint the backend lacks (a 404 naming no model or id, a 405, a 501):
  LACKING_SECONDS;
- the backend refuses `stream_options` (an older server that says so):
  REFUSES_OPTION_SECONDS.

Nothing here does I/O; the clock is passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

from gateway.routing import outlier
from gateway.routing.outlier import OutlierPolicy, OutlierState
from gateway.routing.policy import Backend, BackendKey
from shared.logging import get_logger

log = get_logger("api")

LACKING_SECONDS = 300.0
REFUSES_OPTION_SECONDS = 3600.0


class Trait(Enum):
    """A fact with a lifetime, about one backend and (for LACKS_PATH) one path."""

    LACKS_PATH = "lacks path"
    REFUSES_USAGE_OPTION = "refuses stream_options"


LIFETIMES = {Trait.LACKS_PATH: LACKING_SECONDS, Trait.REFUSES_USAGE_OPTION: REFUSES_OPTION_SECONDS}


class Learned:
    """Outlier state and timed traits, by (registration id, model)."""

    def __init__(
        self,
        outliers: OutlierPolicy | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = outliers or OutlierPolicy()
        self.monotonic = monotonic
        self.outliers: dict[BackendKey, OutlierState] = {}
        self.ejected: dict[BackendKey, float] = {}  # -> until (monotonic)
        # (key, trait, detail) -> forget at (monotonic); detail is the path for LACKS_PATH.
        self.traits: dict[tuple[BackendKey, Trait, str], float] = {}

    # -- timed traits ----------------------------------------------------------
    def learn(self, key: BackendKey, trait: Trait, detail: str = "") -> None:
        self.traits[(key, trait, detail)] = self.monotonic() + LIFETIMES[trait]

    def has(self, key: BackendKey, trait: Trait, detail: str = "") -> bool:
        if not self.traits:
            return False
        until = self.traits.get((key, trait, detail))
        if until is None:
            return False
        if until <= self.monotonic():
            del self.traits[(key, trait, detail)]
            return False
        return True

    def lacking(self, model: str, path: str) -> frozenset[str]:
        """The registrations known to lack `path` for `model` now (usually none: cheap)."""
        if not self.traits:
            return frozenset()
        now = self.monotonic()
        for entry, until in list(self.traits.items()):
            if until <= now:
                del self.traits[entry]
        return frozenset(
            registration
            for (registration, of_model), trait, detail in self.traits
            if trait is Trait.LACKS_PATH and of_model == model and detail == path
        )

    # -- outlier detection -----------------------------------------------------
    def ejected_for(self, model: str) -> frozenset[str]:
        """The registrations out of routing for `model` now (usually none: a dict check)."""
        if not self.ejected:
            return frozenset()
        now = self.monotonic()
        for (registration, of_model), until in list(self.ejected.items()):
            if until <= now:
                del self.ejected[(registration, of_model)]
                log.info(
                    "backend back in routing after its ejection",
                    registration_id=registration,
                    model=of_model,
                )
        return frozenset(
            registration for registration, of_model in self.ejected if of_model == model
        )

    def answered(self, key: BackendKey) -> None:
        """The backend answered for this model (not a fault): its run of faults ends."""
        state = self.outliers.get(key)
        if state is not None and state.consecutive:
            self.outliers[key] = outlier.after_answer(state)

    def faulted(self, backend: Backend, peers: tuple[Backend, ...]) -> float | None:
        """A fault of `backend` for its model; the ejection's length in seconds when this
        fault ejected it (the policy said so), else None. `peers`: the model's backends."""
        key = backend.key
        now = self.monotonic()
        model = backend.model_name
        ejected = self.ejected_for(model)
        in_routing = [peer.registration_id for peer in peers if peer.healthy]
        state = outlier.after_fault(
            self.outliers.get(key, outlier.CLEAN),
            now=now,
            policy=self.policy,
            peers=len(in_routing),
            ejected_peers=sum(1 for peer in in_routing if peer in ejected),
        )
        self.outliers[key] = state
        if not outlier.is_ejected(state, now) or backend.registration_id in ejected:
            return None
        self.ejected[key] = state.ejected_until
        return state.ejected_until - now
