"""The counters' policy (pure), as tables; and the shared-memory store across 'workers'."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.admission.counters import (
    DAY_SECONDS,
    Slot,
    admit,
    brought_to,
    duration,
    ratelimit_headers,
    settle,
    settle_many,
    standing_of,
)
from gateway.admission.limits import Limits
from gateway.admission.shared_counters import SharedCounters

NOON = 20_000 * DAY_SECONDS + 12 * 3600.0  # a day's noon, UTC


def spend(limits: Limits, tokens: list[int], *, start: float = NOON, step: float = 0.0):  # type: ignore[no-untyped-def]
    """Admit one request per entry of `tokens`, `step` seconds apart: the refusals."""
    slot = Slot()
    refused = []
    for index, cost in enumerate(tokens):
        slot, verdict = admit(slot, limits, cost, start + index * step)
        refused.append(None if verdict.refusal is None else verdict.refusal.limit)
        if verdict.refusal is None:
            slot = settle(slot, limits, cost, cost, start + index * step)
    return refused


@pytest.mark.parametrize(
    ("limits", "tokens", "step", "expected"),
    [
        # 3 requests a minute: a burst of 3, the 4th waits.
        (Limits(requests_per_minute=3), [0] * 4, 0.0, [None, None, None, "requests_per_minute"]),
        # ... refilled at 3 a minute: one every 20 s.
        (Limits(requests_per_minute=3), [0] * 5, 20.0, [None] * 5),
        # 100 tokens a minute: 60 + 40 pass, the next 1 waits.
        (Limits(tokens_per_minute=100), [60, 40, 1], 0.0, [None, None, "tokens_per_minute"]),
        # A request larger than the minute's whole limit never passes.
        (Limits(tokens_per_minute=100), [101], 0.0, ["tokens_per_minute"]),
        # 100 tokens a day: not refilled within the day.
        (Limits(tokens_per_day=100), [50, 50, 1], 3600.0, [None, None, "tokens_per_day"]),
        # No limit: nothing refused.
        (Limits(), [10**9] * 3, 0.0, [None] * 3),
    ],
)
def test_admit_table(
    limits: Limits, tokens: list[int], step: float, expected: list[str | None]
) -> None:
    assert spend(limits, tokens, step=step) == expected


def test_the_day_restarts_at_midnight_utc() -> None:
    limits = Limits(tokens_per_day=100)
    slot, verdict = admit(Slot(), limits, 100, NOON)
    assert verdict.refusal is None
    _, refused = admit(slot, limits, 1, NOON + 3600)
    assert refused.refusal is not None and refused.refusal.limit == "tokens_per_day"
    assert refused.refusal.retry_after == pytest.approx(12 * 3600 - 3600)
    _, next_day = admit(slot, limits, 1, (20_001 * DAY_SECONDS) + 1)
    assert next_day.refusal is None


def test_a_reservation_is_corrected_by_the_usage() -> None:
    limits = Limits(tokens_per_minute=1000, tokens_per_day=5000)
    slot, _ = admit(Slot(), limits, 800, NOON)  # reserved 800
    assert standing_of(slot, limits, NOON).tokens_remaining == 200
    slot = settle(slot, limits, 800, 30, NOON)  # used 30
    standing = standing_of(slot, limits, NOON)
    assert (standing.tokens_remaining, standing.day_remaining) == (970, 4970)
    # Unknown usage (no usage in the answer): the reservation stands.
    slot, _ = admit(slot, limits, 100, NOON)
    slot = settle(slot, limits, 100, None, NOON)
    assert standing_of(slot, limits, NOON).tokens_remaining == 870
    # More used than reserved: taken after (the bucket may go below zero).
    slot, _ = admit(slot, limits, 800, NOON)
    slot = settle(slot, limits, 800, 1900, NOON)
    assert standing_of(slot, limits, NOON).tokens_remaining == 0
    assert slot.tokens == pytest.approx(-1030)


_levels = st.one_of(st.just(math.inf), st.floats(-1e6, 1e6))
_times = st.floats(NOON - 2 * DAY_SECONDS, NOON + 2 * DAY_SECONDS)


@given(
    slot=st.builds(
        Slot,
        _levels,
        _times,
        _levels,
        _times,
        st.integers(20_000 - 2, 20_000 + 2),
        st.integers(0, 10**6),
        st.integers(0, 100),
    ),
    limits=st.builds(
        Limits,
        requests_per_minute=st.integers(0, 1000),
        tokens_per_minute=st.integers(0, 10**5),
        tokens_per_day=st.integers(0, 10**6),
        max_concurrent=st.integers(0, 10),
    ),
    change=st.integers(-(10**5), 10**5),
    ended=st.integers(0, 3),
    now=_times,
)
def test_settling_is_bringing_the_slot_to_now_then_correcting_it(
    slot: Slot, limits: Limits, change: int, ended: int, now: float
) -> None:
    """settle_many, written out for speed, is brought_to and then the correction."""
    current = brought_to(slot, limits, now)
    tpm = limits.tokens_per_minute
    expected = current._replace(
        tokens=min(float(tpm), current.tokens - change) if tpm else current.tokens,
        day_used=max(0, current.day_used + change) if limits.tokens_per_day else current.day_used,
        in_flight=max(0, current.in_flight - ended) if limits.max_concurrent else current.in_flight,
    )
    assert settle_many(slot, limits, change, ended, now) == expected


def test_in_flight_is_a_limit_and_given_back() -> None:
    limits = Limits(max_concurrent=2)
    slot, first = admit(Slot(), limits, 0, NOON)
    slot, second = admit(slot, limits, 0, NOON)
    _, third = admit(slot, limits, 0, NOON)
    assert (first.refusal, second.refusal) == (None, None)
    assert third.refusal is not None and third.refusal.limit == "max_concurrent"
    slot = settle(slot, limits, 0, 0, NOON)
    _, fourth = admit(slot, limits, 0, NOON)
    assert fourth.refusal is None


def test_a_limit_set_later_starts_full() -> None:
    slot, _ = admit(Slot(), Limits(), 0, NOON)
    _, verdict = admit(slot, Limits(requests_per_minute=2), 0, NOON + 1)
    assert verdict.refusal is None and verdict.standing.requests_remaining == 1


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.02, "20ms"), (0.0, "0ms"), (1.0, "1s"), (1.2, "2s"), (360, "6m0s"), (3723, "1h2m3s")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_headers_name_each_limit() -> None:
    limits = Limits(requests_per_minute=60, tokens_per_minute=1000, tokens_per_day=9000)
    slot, verdict = admit(Slot(), limits, 100, NOON)
    headers = dict(ratelimit_headers(verdict.standing))
    assert headers[b"x-ratelimit-limit-requests"] == b"60"
    assert headers[b"x-ratelimit-remaining-requests"] == b"59"
    assert headers[b"x-ratelimit-reset-requests"] == b"1s"
    assert headers[b"x-ratelimit-limit-tokens"] == b"1000"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"900"
    assert headers[b"x-ratelimit-reset-tokens"] == b"6s"
    assert headers[b"x-ratelimit-remaining-tokens-day"] == b"8900"
    assert ratelimit_headers(standing_of(slot, Limits(), NOON)) == []


def test_workers_share_one_count(tmp_path: Path) -> None:
    """Two stores on one folder are two workers: 5 requests a minute is 5 for both."""
    clock = [NOON]
    one = SharedCounters(tmp_path, clock=lambda: clock[0])
    two = SharedCounters(tmp_path, clock=lambda: clock[0])
    try:
        assert one.column != two.column
        limits = Limits(requests_per_minute=5, max_concurrent=10)
        refused = [
            (one if index % 2 else two).admit_now("key:a", limits, 0).refusal for index in range(7)
        ]
        assert [r is None for r in refused] == [True] * 5 + [False] * 2
        assert one.standing_now("key:a", limits).in_flight == 5
        # Another subject has its own count; an address lives in another table.
        assert one.admit_now("key:b", limits, 0).refusal is None
        assert two.admit_now("ip:127.0.0.1", limits, 0).refusal is None
    finally:
        one.close()
        two.close()


def test_a_dead_workers_requests_in_flight_are_forgotten(tmp_path: Path) -> None:
    """A worker that dies holding requests: the next one to take its column clears it."""
    limits = Limits(max_concurrent=3)
    survivor = SharedCounters(tmp_path)
    dying = SharedCounters(tmp_path)
    for _ in range(2):
        assert dying.admit_now("key:a", limits, 0).refusal is None
    assert survivor.admit_now("key:a", limits, 0).refusal is None
    assert survivor.standing_now("key:a", limits).in_flight == 3
    dying.close()  # (its lock let go, as the kernel does for a dead process)
    successor = SharedCounters(tmp_path)
    try:
        assert successor.column == 1
        assert survivor.standing_now("key:a", limits).in_flight == 1
    finally:
        survivor.close()
        successor.close()


def test_a_full_table_reuses_the_least_recently_used_slot(tmp_path: Path) -> None:
    from gateway.admission import shared_counters

    clock = [NOON]
    store = SharedCounters(tmp_path, clock=lambda: clock[0])
    try:
        limits = Limits(requests_per_minute=1)
        for index in range(shared_counters.SLOTS + 100):
            clock[0] += 0.001
            store.admit_now(f"key:{index}", limits, 0)
        # The most recent clients are still counted (their minute is spent).
        assert store.admit_now(f"key:{shared_counters.SLOTS + 99}", limits, 0).refusal is not None
        assert math.isfinite(clock[0])
    finally:
        store.close()


def test_a_slot_another_worker_reused_is_found_again_not_written_over(tmp_path: Path) -> None:
    """A worker remembers where each subject's slot is; when another worker has given
    that slot to someone else meanwhile (a full table), the first one looks again
    instead of counting its subject in the other's slot."""
    from gateway.admission import shared_counters

    clock = [NOON]
    first = SharedCounters(tmp_path, clock=lambda: clock[0])
    second = SharedCounters(tmp_path, clock=lambda: clock[0])
    try:
        limits = Limits(requests_per_minute=1)
        first.admit_now("key:remembered", limits, 0)  # its minute is spent
        # The second worker fills the table: the remembered slot goes to a newcomer.
        for index in range(shared_counters.SLOTS + shared_counters.PROBES):
            clock[0] += 0.001
            second.admit_now(f"key:{index}", limits, 0)
        newcomers = [f"key:{index}" for index in range(shared_counters.SLOTS)]
        before = {subject: second.standing_now(subject, limits) for subject in newcomers[-50:]}
        clock[0] += 0.001
        # Its slot was reused: it is a new client again (a full minute), ...
        assert first.admit_now("key:remembered", limits, 0).refusal is None
        # ... and no newcomer was charged for it.
        after = {subject: second.standing_now(subject, limits) for subject in newcomers[-50:]}
        assert [s.requests_remaining for s in after.values()] == [
            s.requests_remaining for s in before.values()
        ]
    finally:
        first.close()
        second.close()


def test_one_workers_store_counts_as_the_shared_one_does(tmp_path: Path) -> None:
    """LocalCounters (WORKERS=1) and SharedCounters give the same verdicts, standing and
    in-flight counts for the same requests."""
    from gateway.admission.local_counters import LocalCounters

    clock = [NOON]
    stores = [
        LocalCounters(clock=lambda: clock[0]),
        SharedCounters(tmp_path, clock=lambda: clock[0]),
    ]
    limits = Limits(
        requests_per_minute=3, tokens_per_minute=1000, tokens_per_day=1500, max_concurrent=2
    )
    try:
        seen: list[list[object]] = [[], []]
        # (seconds later, tokens reserved, settled at once: else it stays in flight)
        steps = [(0, 300, False), (1, 300, True), (1, 900, True), (25, 100, True)]
        steps += [(0, 100, False), (30, 600, True), (40, 400, True), (0, 10, True)]
        for later, tokens, settled in steps:
            clock[0] += later
            for index, store in enumerate(stores):
                verdict = store.admit_now("key:k", limits, tokens)
                seen[index].append(verdict.refusal.limit if verdict.refusal else None)
                if verdict.refusal is None and settled:
                    store.settle_now("key:k", limits, tokens, tokens // 3)
                seen[index].append(store.standing_now("key:k", limits))
        assert seen[0] == seen[1]
        refusals = {entry for entry in seen[0] if isinstance(entry, str)}
        assert refusals == {"max_concurrent", "tokens_per_minute"}, seen[0]
        for store in stores:
            store.seed_day("key:other", 1400)
        assert stores[0].standing_now("key:other", limits) == stores[1].standing_now(
            "key:other", limits
        )
        assert stores[0].standing_now("key:other", limits).day_remaining == 100
    finally:
        stores[1].close()


def test_one_workers_store_is_bounded_and_forgets_the_idle_first() -> None:
    """A full half forgets its least recently used subjects with nothing in flight; keys
    and addresses are kept apart, so addresses cannot push keys out."""
    from gateway.admission.local_counters import LocalCounters

    clock = [NOON]
    store = LocalCounters(clock=lambda: clock[0], slots=100)
    limits = Limits(requests_per_minute=1, max_concurrent=5)
    store.admit_now("key:busy", limits, 0)  # in flight: never forgotten
    store.admit_now("key:kept", Limits(requests_per_minute=1), 0)
    store.seed_day("key:spent", 1000)  # its day used up: never forgotten today
    for index in range(99):
        clock[0] += 0.001
        store.admit_now(f"ip:10.0.0.{index}", Limits(requests_per_minute=1), 0)
    for index in range(500):  # addresses only: the keys' half is untouched
        clock[0] += 0.001
        store.admit_now(f"ip:10.1.{index // 250}.{index % 250}", Limits(requests_per_minute=1), 0)
    assert len(store._addresses) <= 100 and len(store._keys) == 3
    assert store.admit_now("key:kept", Limits(requests_per_minute=1), 0).refusal is not None
    for index in range(300):  # keys now: the least recently used idle ones go
        clock[0] += 0.001
        store.admit_now(f"key:{index}", Limits(requests_per_minute=1), 0)
    assert len(store._keys) <= 100
    assert store.standing_now("key:busy", limits).in_flight == 1
    day = Limits(tokens_per_day=1000)
    assert store.admit_now("key:spent", day, 1).refusal is not None  # still spent
    # A half of subjects it must keep grows past its size, a quarter at a time (each
    # new subject does not scan it again).
    busy = LocalCounters(clock=lambda: clock[0], slots=8)
    scans = []
    make_room = busy._make_room
    busy._make_room = lambda half: (scans.append(len(half)), make_room(half))  # type: ignore[method-assign]
    for index in range(40):
        busy.admit_now(f"key:flying{index}", limits, 0)
    assert len(busy._keys) == 40 and scans == list(range(8, 40, 2))
    # The most recent are still counted (their minute is spent).
    assert store.admit_now("key:299", Limits(requests_per_minute=1), 0).refusal is not None
