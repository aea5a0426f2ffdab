"""Outlier detection as tables: when a backend is ejected, for how long, and when not;
and the memory of backends that lack an endpoint."""

from __future__ import annotations

import pytest

from gateway.routing.outlier import (
    CLEAN,
    OutlierPolicy,
    OutlierState,
    after_answer,
    after_fault,
    is_ejected,
    may_eject,
)

POLICY = OutlierPolicy(consecutive=3, base_seconds=30, max_percent=50)


def faults(
    count: int,
    *,
    now: float = 100.0,
    peers: int = 4,
    ejected_peers: int = 0,
    state: OutlierState = CLEAN,
) -> OutlierState:
    for _ in range(count):
        state = after_fault(state, now=now, policy=POLICY, peers=peers, ejected_peers=ejected_peers)
    return state


@pytest.mark.parametrize(("count", "ejected"), [(1, False), (2, False), (3, True)])
def test_ejected_after_consecutive_faults(count: int, ejected: bool) -> None:
    assert is_ejected(faults(count), 100.0) is ejected


def test_an_answer_in_between_starts_the_count_again() -> None:
    state = after_answer(faults(2))
    assert not is_ejected(faults(2, state=state), 100.0)
    assert is_ejected(faults(3, state=state), 100.0)


@pytest.mark.parametrize(
    ("ejections_before", "ended_ago", "seconds"),
    [
        (0, 1000.0, 30.0),
        (1, 10.0, 60.0),  # ejected again soon after: twice as long
        (2, 10.0, 90.0),
        (1, 31.0, 30.0),  # stayed in as long as the last ejection: forgotten
    ],
)
def test_ejection_length_grows_with_recent_ejections(
    ejections_before: int, ended_ago: float, seconds: float
) -> None:
    now = 1000.0
    state = OutlierState(0, ejections_before, now - ended_ago)
    ejected = faults(3, now=now, state=state)
    assert ejected.ejected_until == pytest.approx(now + seconds)
    assert not is_ejected(ejected, now + seconds)


@pytest.mark.parametrize(
    ("peers", "ejected_peers", "allowed"),
    [
        (1, 0, False),  # never the last one
        (2, 0, True),
        (2, 1, False),  # 50 % of 2 is one
        (4, 1, True),
        (4, 2, False),
        (3, 0, True),
        (3, 1, False),  # 50 % of 3, rounded down, is one
    ],
)
def test_at_most_half_of_a_model_and_never_the_last(
    peers: int, ejected_peers: int, allowed: bool
) -> None:
    assert may_eject(peers=peers, ejected_peers=ejected_peers, max_percent=50) is allowed
    state = faults(3, peers=peers, ejected_peers=ejected_peers)
    assert is_ejected(state, 100.0) is allowed


def test_a_hundred_percent_still_keeps_the_last_one() -> None:
    assert not may_eject(peers=2, ejected_peers=1, max_percent=100)
    assert may_eject(peers=2, ejected_peers=0, max_percent=100)


def test_faults_while_ejected_do_not_extend_it() -> None:
    ejected = faults(3)
    again = faults(5, now=110.0, state=ejected)
    assert again.ejected_until == ejected.ejected_until
