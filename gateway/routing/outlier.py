"""Outlier detection: when passive evidence takes a backend out of routing. Pure, no clock.

The model is Envoy's: a backend is ejected after `consecutive` backend faults
in a row (refused, reset, bad or cut answer, 5xx, timeout; a 4xx is the
client's and a 429 is busy, neither counts, and any answer in between starts
the count again). An ejection lasts `base_seconds` times the number of times
the backend was ejected recently, so a backend that keeps failing stays out
longer. At most `max_percent` of a model's backends are out at once, and
never the last one that is in: passive evidence alone does not take a whole
model down (healthd's probe does that, when the backend is really gone).
Nothing but time ends an ejection: a backend whose `/v1/models` answers
while its completions fail must not flap back in on each probe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class OutlierPolicy:
    consecutive: int = 3
    base_seconds: float = 30.0
    max_percent: int = 50


@dataclass(frozen=True)
class OutlierState:
    """What one gateway process knows of one backend's recent faults."""

    consecutive: int = 0  # backend faults in a row, since the last answer
    ejections: int = 0  # times ejected recently (the multiplier of the next ejection)
    ejected_until: float = 0.0  # loop time; in the past when in routing


CLEAN = OutlierState()


def is_ejected(state: OutlierState, now: float) -> bool:
    return now < state.ejected_until


def after_answer(state: OutlierState) -> OutlierState:
    """The backend answered (anything but a 5xx or 429): the count starts again."""
    return (
        state if state.consecutive == 0 else OutlierState(0, state.ejections, state.ejected_until)
    )


def may_eject(*, peers: int, ejected_peers: int, max_percent: int) -> bool:
    """Whether one more of a model's `peers` backends may go, `ejected_peers` being out."""
    allowed = math.floor(peers * max_percent / 100)
    return ejected_peers + 1 <= allowed and ejected_peers + 1 < peers


def after_fault(
    state: OutlierState,
    *,
    now: float,
    policy: OutlierPolicy,
    peers: int,
    ejected_peers: int,
) -> OutlierState:
    """One more backend fault. The result is ejected (`is_ejected(result, now)`) when this
    fault completes a run of `policy.consecutive` and the model can spare the backend."""
    consecutive = state.consecutive + 1
    if is_ejected(state, now) or consecutive < policy.consecutive:
        return OutlierState(consecutive, state.ejections, state.ejected_until)
    if not may_eject(peers=peers, ejected_peers=ejected_peers, max_percent=policy.max_percent):
        return OutlierState(consecutive, state.ejections, state.ejected_until)
    # "Recently": the multiplier is forgotten once the backend has stayed in for
    # as long as its last ejection lasted.
    last_length = policy.base_seconds * state.ejections
    recent = state.ejections if now - state.ejected_until < last_length else 0
    ejections = recent + 1
    return OutlierState(0, ejections, now + policy.base_seconds * ejections)
