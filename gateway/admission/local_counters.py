"""The counter store of a gateway with one worker process: a dict in its own memory.

With WORKERS=1 there is no other process to share the counts with, so the
shared table (gateway/admission/shared_counters.py: a mapped file changed under
an exclusive flock, each slot packed and unpacked with struct) is work for
nothing: about a tenth of a keyed request's CPU (bench/ab.py, see the README's
"Clients and keys"). Same policy (gateway/admission/counters.py), same
interface, same bounds: at most SLOTS subjects per half, keys apart from
addresses (a client spraying addresses cannot push the keys' counts out), and
when a half is full, the least recently used subjects with nothing in flight
go (they come back with full buckets, which they would mostly have had), but
not a key with tokens counted today (the half then holds more than SLOTS, and
room is made again only once it has grown by another quarter).

A request's end is written at once: the event loop is the only writer, so
there is no lock to batch ends under.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.admission.counters import (
    DAY_SECONDS,
    ImmediateStore,
    Slot,
    Standing,
    Verdict,
    admit,
    brought_to,
    settle_many,
    standing_of,
)
from gateway.admission.limits import Limits

SLOTS = 16_384
_EMPTY = Slot()


class LocalCounters(ImmediateStore):
    """CounterStore in this process's memory (see the module's docstring)."""

    def __init__(self, clock: Callable[[], float] = time.time, slots: int = SLOTS) -> None:
        self.clock = clock
        self.slots = slots
        # Two halves, each in order of last use (a touched subject moves to the end).
        self._keys: dict[str, Slot] = {}
        self._addresses: dict[str, Slot] = {}
        # Per half (by id), the size at which room is made next: SLOTS, or more when a
        # pass found too little to forget (so that each new subject does not scan).
        self._room_at = {id(self._keys): slots, id(self._addresses): slots}

    def _half(self, subject: str) -> dict[str, Slot]:
        return self._addresses if subject.startswith("ip:") else self._keys

    def _take(self, subject: str) -> tuple[dict[str, Slot], Slot]:
        """The subject's half and slot, taken out (put back at the end: last used)."""
        half = self._half(subject)
        slot = half.pop(subject, None)
        if slot is None:
            if len(half) >= self._room_at[id(half)]:
                self._make_room(half)
            slot = _EMPTY
        return half, slot

    def _make_room(self, half: dict[str, Slot]) -> None:
        """Forget the least recently used quarter of the subjects with nothing in flight
        and no tokens counted today (one pass now and then, not one per new subject). A
        day's count is kept: forgotten, it would give a key its day again (only keys
        have one, and only the admin makes keys, so what is kept is bounded by them)."""
        quota = max(1, self.slots // 4)
        today = int(self.clock() // DAY_SECONDS)
        idle = [
            subject
            for subject, slot in half.items()
            if not slot.in_flight and not (slot.day_used and slot.day == today)
        ][:quota]
        for subject in idle:
            del half[subject]
        self._room_at[id(half)] = max(self.slots, len(half) + quota)

    def admit_now(self, subject: str, limits: Limits, tokens: int) -> Verdict:
        half, before = self._take(subject)
        after, verdict = admit(before, limits, tokens, self.clock())
        half[subject] = after
        return verdict

    def settle_now(self, subject: str, limits: Limits, reserved: int, used: int | None) -> None:
        change = 0 if used is None else used - reserved
        half = self._half(subject)
        before = half.get(subject)
        if before is None:  # forgotten meanwhile (nothing in flight was counted)
            half, before = self._take(subject)
        half[subject] = settle_many(before, limits, change, 1, self.clock())  # (its place kept)

    # (SharedCounters batches ends under its lock; here one is written as it comes.)
    settle_later = settle_now

    def flush(self) -> None:
        """Nothing waits to be written (the interface of SharedCounters)."""

    def seed_day(self, subject: str, used: int) -> None:
        """Today's tokens a subject used before this run (from the usage per key, at
        start), so that a restart does not give a key its day again."""
        half, before = self._take(subject)
        half[subject] = before._replace(day=int(self.clock() // DAY_SECONDS), day_used=used)

    def standing_now(self, subject: str, limits: Limits) -> Standing:
        now = self.clock()
        slot = self._half(subject).get(subject, _EMPTY)
        return standing_of(brought_to(slot, limits, now), limits, now)

    def close(self) -> None:
        """Nothing to release (the interface of SharedCounters)."""
