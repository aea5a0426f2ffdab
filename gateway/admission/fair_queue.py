"""The fair share of a full pool: which waiting request gets the next freed slot.

When every backend a request could use is at its `max_concurrent`, the request
waits here (up to QUEUE_TIMEOUT_SECONDS) for a slot. First come, first served
would let one client's fifty requests all go before a classmate's one; this
queue is a weighted round robin over the clients that have requests waiting,
by stride scheduling:

- each waiting client has a *pass*; a freed slot goes to the waiting client
  with the lowest pass (ties: the one that began waiting first), whose pass
  then moves on by its *stride*, 1 / priority: while both wait, a client of
  priority 3 gets three slots for every one of a client of priority 1;
- a client that begins to wait joins at the queue's virtual time (the pass of
  the last client served), or at the pass it left with if that is later: time
  spent idle banks no credit, and leaving and coming back at once wins no turn;
- a client's own requests go first come, first served.

`stride`, `joining_pass`, `served` and `next_client` are that policy, pure.
`FairQueue` keeps one worker's waiters, and `wait_for_slot` is the async part.

How a slot is handed over. A slot freed (an attempt's end, once its slot is
released: forward.py pushes `freed` on the attempt's exit stack) becomes a
`Grant` of that registration, given to the one waiter whose turn it is among
those that could use it; the waiter stays in the queue, marked as granted,
until it leaves. A newcomer whose backend a waiter could use queues behind
the waiters (`wanted`), and a waiter looking again on its own (the poll: slots
freed by registry changes) leaves granted registrations alone, so the slot
waits for the waiter it was granted to. A granted waiter that cannot take its
slot (taken after all, or its backend is no longer usable) passes the grant
on, and so does one that leaves without using it (its client left, its wait
timed out): a grant is used, or offered to every waiter that could use it, and
never lost. Each waiter is removed by identity by its own exit.

One slot is not handed on at once: one freed by a client that is not waiting
but would be next if it were (a client sending one request at a time, between
two of them) is kept for it ANTICIPATION_SECONDS, and handed on as soon as it
asks again (or when the time is up). Without it, whenever answers end together,
every slot freed with the light client's own is gone before its next request.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol

from gateway.routing.policy import Backend
from shared.errors import RateLimited

MAX_PRIORITY = 100
POLL_SECONDS = 0.5  # a waiter looks again on its own this often (slots freed elsewhere)
RETRY_AFTER_SECONDS = 5
ANTICIPATION_SECONDS = 0.025  # a freed slot kept for its client's next request (`freed`)
MAX_REMEMBERED = 10_000  # passes of clients that left the queue, kept to place them back


class PoolBusy(RateLimited):
    """The queue is full, or the wait for a slot ran out: 429 with Retry-After."""

    def __init__(self, message: str) -> None:
        super().__init__(
            f"the pool is busy: {message}; retry in {RETRY_AFTER_SECONDS}s",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


@dataclass(frozen=True)
class Turn:
    """Where a waiting client stands: its pass, and when it began to wait (ties)."""

    at: float
    since: int


def stride(priority: int) -> float:
    """How far a client's pass moves per slot it gets: weight `priority`, 1 to 100."""
    return 1.0 / min(max(priority, 1), MAX_PRIORITY)


def joining_pass(virtual_time: float, left_at: float | None) -> float:
    """The pass of a client that begins to wait: never behind the queue's virtual time
    (no credit for time spent idle), nor before the pass it left with (no turn won by
    leaving and coming back)."""
    return virtual_time if left_at is None else max(virtual_time, left_at)


def served(turn: Turn, priority: int) -> Turn:
    """The client's turn after it got a slot."""
    return replace(turn, at=turn.at + stride(priority))


def next_client(turns: Iterable[tuple[str, Turn]]) -> str | None:
    """The client whose turn it is: the lowest pass; of equals, the one waiting longest."""
    best: tuple[float, int, str] | None = None
    for client, turn in turns:
        if best is None or (turn.at, turn.since) < best[:2]:
            best = (turn.at, turn.since, client)
    return None if best is None else best[2]


@dataclass(frozen=True)
class Grant:
    """A freed slot of one registration, offered to waiters in turn; `declined` are
    the waiters (by number) that could not use it."""

    registration_id: str
    declined: frozenset[int] = frozenset()


class Seeker(Protocol):
    """The request's side of a wait: which backend it may take (forward.py's choice)."""

    def pick(self, exclude: frozenset[str]) -> Backend | None:
        """A backend with a free slot for the request, none of `exclude`; None if none."""

    def usable(self) -> frozenset[str]:
        """The registrations the request could use were none of them full (none: it is
        no longer a matter of capacity)."""


class Waiter:
    """One waiting request. Woken by a grant; stays in the queue until it leaves."""

    def __init__(self, number: int, client: str, candidates: frozenset[str]) -> None:
        self.number = number
        self.client = client
        self.candidates = candidates  # registration ids it could use
        self.grant: Grant | None = None
        self.took: str | None = None  # the registration whose slot it took
        self._woken = asyncio.Event()

    def wake(self, grant: Grant) -> None:
        self.grant = grant
        self._woken.set()

    async def wait(self, timeout: float) -> Grant | None:
        """The grant it holds, once woken; None when `timeout` passed first."""
        if self.grant is None:
            try:
                async with asyncio.timeout(timeout):
                    await self._woken.wait()
            except TimeoutError:
                pass
        self._woken.clear()
        return self.grant


@dataclass
class Client:
    """A client with requests waiting: its turn, weight and waiters (first come first)."""

    turn: Turn
    priority: int
    waiters: list[Waiter] = field(default_factory=list)


class FairQueue:
    """The waiting requests of one worker process, and who gets the next freed slot."""

    def __init__(
        self, *, max_per_client: int, max_total: int, anticipation: float = ANTICIPATION_SECONDS
    ) -> None:
        self.max_per_client = max_per_client
        self.max_total = max_total
        self.anticipation = anticipation  # seconds a slot is kept for its client (`freed`)
        self.clients: dict[str, Client] = {}
        self.left: dict[str, float] = {}  # the pass each client left the queue with
        self.virtual_time = 0.0
        self.total = 0
        self.wanting: dict[str, int] = {}  # registration id: waiters that could use it
        self.granted: dict[str, int] = {}  # registration id: grants not yet used, slots kept
        # Slots kept a moment for the client that freed them (see `freed`), by client.
        self.kept: dict[str, list[tuple[Grant, asyncio.TimerHandle]]] = {}
        self._numbers = itertools.count()

    def wanted(self, registration_id: str) -> bool:
        """Whether a waiting request could use this registration: a newcomer that picked
        it queues behind them."""
        return self.total > 0 and registration_id in self.wanting

    def freed(self, registration_id: str, client: str = "") -> None:
        """A slot of this registration was released (by a request of `client`): it goes to
        the next waiter in turn. When `client` would be that waiter, were it waiting, the
        slot is kept for it for ANTICIPATION_SECONDS: a client that sends one request at
        a time asks again a moment after its answer, and without the wait every slot
        freed with its own would be gone by then whenever answers end together."""
        if not self.total:
            return
        grant = Grant(registration_id)
        if not self._owed(client):
            self._offer(grant)
            return
        self._reserve(registration_id)  # (pollers and newcomers leave it alone meanwhile)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.anticipation, self._unkeep, client, grant)
        self.kept.setdefault(client, []).append((grant, timer))

    def _owed(self, client: str) -> bool:
        """Whether `client`, not waiting, would go before every waiting client."""
        if not client or client in self.clients:
            return False
        at = joining_pass(self.virtual_time, self.left.get(client))
        return all(at < waiting.turn.at for waiting in self.clients.values())

    def _unkeep(self, client: str, grant: Grant) -> None:
        """A kept slot's client asked again, or did not in time: it goes to whoever's turn
        it is now (the client itself, when it came back)."""
        kept = self.kept[client]
        kept[:] = [(g, timer) for g, timer in kept if g is not grant]
        if not kept:
            del self.kept[client]
        self._unreserve(grant.registration_id)
        self._offer(grant)

    async def wait_for_slot(
        self, seeker: Seeker, *, client: str, priority: int, deadline: float
    ) -> Backend | None:
        """The backend whose slot the request took when its turn came; None when nothing
        it could use is left (no longer a matter of capacity). PoolBusy when the queue
        is full, or when `deadline` (the loop's clock) passes first."""
        candidates = seeker.usable()
        if not candidates:
            return None
        loop = asyncio.get_running_loop()
        with self._seat(client, priority, candidates) as waiter:
            while (remaining := deadline - loop.time()) > 0:
                grant = await waiter.wait(min(remaining, POLL_SECONDS))
                if grant is not None:  # its slot, and no other
                    backend = seeker.pick(waiter.candidates - {grant.registration_id})
                else:  # looking on its own: not at slots granted to others
                    backend = seeker.pick(frozenset(self.granted))
                if backend is not None:
                    waiter.took = backend.registration_id
                    return backend
                if grant is not None:
                    self._pass_on(waiter)
                candidates = seeker.usable()
                if not candidates:
                    return None
                self._set_candidates(waiter, candidates)
            raise PoolBusy("no backend of the model had a free slot within QUEUE_TIMEOUT_SECONDS")

    @contextmanager
    def _seat(self, client: str, priority: int, candidates: frozenset[str]) -> Iterator[Waiter]:
        """A place in the queue, left however the wait ends (a grant not used passed on)."""
        waiter = self._join(client, priority, candidates)
        try:
            yield waiter
        finally:
            self._leave(waiter)

    def _join(self, client: str, priority: int, candidates: frozenset[str]) -> Waiter:
        if self.total >= self.max_total:
            raise PoolBusy(f"{self.total} requests are waiting already (QUEUE_MAX_TOTAL)")
        waiting = self.clients.get(client)
        if waiting is not None and len(waiting.waiters) >= self.max_per_client:
            raise PoolBusy(
                f"{len(waiting.waiters)} of your requests are waiting already (QUEUE_MAX_PER_KEY)"
            )
        waiter = Waiter(next(self._numbers), client, frozenset())
        if waiting is None:
            at = joining_pass(self.virtual_time, self.left.pop(client, None))
            waiting = self.clients[client] = Client(Turn(at, waiter.number), priority)
        waiting.priority = priority  # (the latest word on the client's weight)
        waiting.waiters.append(waiter)
        self.total += 1
        self._set_candidates(waiter, candidates)
        for grant, timer in self.kept.get(client, [])[:]:  # kept for it: no need to wait
            timer.cancel()
            self._unkeep(client, grant)
        return waiter

    def _leave(self, waiter: Waiter) -> None:
        grant = waiter.grant
        if grant is not None:
            self._settle(waiter)
            if grant.registration_id != waiter.took:  # not used: the next waiter's
                self._refund(waiter)
                self._offer(replace(grant, declined=grant.declined | {waiter.number}))
        self._set_candidates(waiter, frozenset())
        waiting = self.clients[waiter.client]
        waiting.waiters.remove(waiter)  # this waiter, whoever is first
        self.total -= 1
        if not waiting.waiters:
            del self.clients[waiter.client]
            self._remember(waiter.client, waiting.turn.at)

    def _offer(self, grant: Grant) -> None:
        """The grant to the waiter whose turn it is among those that could use it."""
        first: dict[str, Waiter] = {}
        for name, waiting in self.clients.items():
            for waiter in waiting.waiters:
                if (
                    waiter.grant is None
                    and grant.registration_id in waiter.candidates
                    and waiter.number not in grant.declined
                ):
                    first[name] = waiter
                    break
        chosen = next_client((name, self.clients[name].turn) for name in first)
        if chosen is None:
            return  # nobody waiting can use it
        waiting = self.clients[chosen]
        self.virtual_time = max(self.virtual_time, waiting.turn.at)
        waiting.turn = served(waiting.turn, waiting.priority)
        self._reserve(grant.registration_id)
        first[chosen].wake(grant)

    def _pass_on(self, waiter: Waiter) -> None:
        """A granted waiter that could not take the slot: the grant goes on, its client
        keeps its turn, and it waits again."""
        grant = waiter.grant
        assert grant is not None
        self._settle(waiter)
        self._refund(waiter)
        self._offer(replace(grant, declined=grant.declined | {waiter.number}))

    def _settle(self, waiter: Waiter) -> None:
        """The waiter's grant is no longer outstanding."""
        assert waiter.grant is not None
        self._unreserve(waiter.grant.registration_id)
        waiter.grant = None

    def _reserve(self, rid: str) -> None:
        self.granted[rid] = self.granted.get(rid, 0) + 1

    def _unreserve(self, rid: str) -> None:
        self.granted[rid] -= 1
        if not self.granted[rid]:
            del self.granted[rid]

    def _refund(self, waiter: Waiter) -> None:
        waiting = self.clients[waiter.client]
        waiting.turn = replace(waiting.turn, at=waiting.turn.at - stride(waiting.priority))

    def _set_candidates(self, waiter: Waiter, candidates: frozenset[str]) -> None:
        """What the waiter could use, counted by registration for `wanted`."""
        for rid in waiter.candidates - candidates:
            self.wanting[rid] -= 1
            if not self.wanting[rid]:
                del self.wanting[rid]
        for rid in candidates - waiter.candidates:
            self.wanting[rid] = self.wanting.get(rid, 0) + 1
        waiter.candidates = candidates

    def _remember(self, client: str, at: float) -> None:
        """A pass kept while it is ahead of the virtual time (behind it, it says nothing)."""
        if at > self.virtual_time:
            self.left[client] = at
        if len(self.left) > MAX_REMEMBERED:
            self.left = {name: at for name, at in self.left.items() if at > self.virtual_time}
            while len(self.left) > MAX_REMEMBERED // 2:  # the oldest first
                del self.left[next(iter(self.left))]
