"""The fair queue: its policy as tables, then the hand-over of a freed slot in the
orders of events that lose one (a waiter cancelled or refused after it was woken, a
waiter leaving while another holds the grant)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from gateway.admission.fair_queue import (
    ANTICIPATION_SECONDS,
    POLL_SECONDS,
    FairQueue,
    PoolBusy,
    Turn,
    joining_pass,
    next_client,
    served,
    stride,
)
from gateway.routing.policy import Backend


@pytest.mark.parametrize(
    ("priority", "expected"), [(1, 1.0), (2, 0.5), (4, 0.25), (100, 0.01), (0, 1.0), (500, 0.01)]
)
def test_stride_is_the_inverse_of_the_priority(priority: int, expected: float) -> None:
    assert stride(priority) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("virtual_time", "left_at", "expected"),
    [
        (5.0, None, 5.0),  # new: at the virtual time
        (5.0, 2.0, 5.0),  # idle for long: no credit banked
        (5.0, 6.0, 6.0),  # served a moment ago and back at once: behind, where it left
        (0.0, None, 0.0),
    ],
)
def test_joining_pass(virtual_time: float, left_at: float | None, expected: float) -> None:
    assert joining_pass(virtual_time, left_at) == expected


def test_served_moves_the_pass_by_the_stride() -> None:
    assert served(Turn(2.0, 7), 4) == Turn(2.25, 7)


@pytest.mark.parametrize(
    ("turns", "expected"),
    [
        ([], None),
        ([("a", Turn(1.0, 5))], "a"),
        ([("a", Turn(2.0, 0)), ("b", Turn(1.0, 9))], "b"),  # the lowest pass
        ([("a", Turn(1.0, 3)), ("b", Turn(1.0, 1))], "b"),  # of equals, waiting longest
        ([("a", Turn(1.0, 1)), ("b", Turn(1.5, 0)), ("c", Turn(1.0, 2))], "a"),
    ],
)
def test_next_client(turns: list[tuple[str, Turn]], expected: str | None) -> None:
    assert next_client(turns) == expected


# The async part, against a pool of slots the test frees by hand.


@dataclass
class Pool:
    """Registrations with free slots; `refuse` are clients whose picks find nothing."""

    free: dict[str, int] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)


@dataclass
class Seeker:
    pool: Pool
    client: str
    usable_ids: frozenset[str] = frozenset({"r"})

    def pick(self, exclude: frozenset[str]) -> Backend | None:
        if self.client in self.pool.refuse:
            return None
        for rid, free in sorted(self.pool.free.items()):
            if free and rid not in exclude and rid in self.usable_ids:
                self.pool.free[rid] -= 1
                return Backend(rid, "m", "http://127.0.0.1:9")
        return None

    def usable(self) -> frozenset[str]:
        return self.usable_ids


class Scene:
    """Waiters as tasks; who took a slot, in order."""

    def __init__(self, queue: FairQueue, pool: Pool) -> None:
        self.queue = queue
        self.pool = pool
        self.took: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def wait(
        self,
        name: str,
        client: str,
        *,
        priority: int = 1,
        seconds: float = 30,
        usable: set[str] | None = None,
    ) -> None:
        seeker = Seeker(self.pool, client, frozenset(usable or {"r"}))

        async def waiting() -> None:
            loop = asyncio.get_running_loop()
            backend = await self.queue.wait_for_slot(
                seeker, client=client, priority=priority, deadline=loop.time() + seconds
            )
            assert backend is not None
            self.took.append(name)

        self.tasks[name] = asyncio.create_task(waiting())

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async def free(self, rid: str = "r", by: str = "") -> None:
        """A slot released (by a request of `by`), as an attempt's end does: free, then
        `freed`."""
        self.pool.free[rid] = self.pool.free.get(rid, 0) + 1
        self.queue.freed(rid, by)
        await self.settle()


def run(scenario: Callable[[Scene], Awaitable[None]], **limits: int) -> None:
    async def main() -> None:
        queue = FairQueue(
            max_per_client=limits.get("max_per_client", 100),
            max_total=limits.get("max_total", 1000),
            anticipation=limits.get("anticipation_ms", ANTICIPATION_SECONDS * 1000) / 1000,
        )
        scene = Scene(queue, Pool())
        await scenario(scene)
        for task in scene.tasks.values():
            task.cancel()
        await asyncio.gather(*scene.tasks.values(), return_exceptions=True)
        assert queue.total == 0 and not queue.clients and not queue.wanting and not queue.granted

    asyncio.run(main())


@pytest.mark.parametrize(
    ("waiting", "slots", "expected"),
    [
        # One heavy client with 6 waiting, a light one with 1 that came last: second, not 7th.
        ({"heavy": (1, 6), "light": (1, 1)}, 4, ["heavy0", "light0", "heavy1", "heavy2"]),
        # Weights 3 and 1, both always waiting: 3 slots to 1.
        (
            {"a": (3, 8), "b": (1, 8)},
            8,
            ["a0", "b0", "a1", "a2", "a3", "b1", "a4", "a5"],
        ),
        # Equal weights alternate, the first to wait first.
        ({"x": (1, 3), "y": (1, 3)}, 6, ["x0", "y0", "x1", "y1", "x2", "y2"]),
    ],
)
def test_freed_slots_go_round_robin_by_weight(
    waiting: dict[str, tuple[int, int]], slots: int, expected: list[str]
) -> None:
    async def scenario(scene: Scene) -> None:
        for client, (priority, count) in waiting.items():
            for index in range(count):
                scene.wait(f"{client}{index}", client, priority=priority)
        await scene.settle()
        for _ in range(slots):
            await scene.free()
        assert scene.took == expected

    run(scenario)


def test_a_client_that_comes_back_at_once_wins_no_turn() -> None:
    """Light is served, leaves, and asks again at once: it goes after heavy's next."""

    async def scenario(scene: Scene) -> None:
        for index in range(4):
            scene.wait(f"h{index}", "heavy")
        await scene.settle()
        await scene.free()
        scene.wait("l0", "light")
        await scene.settle()
        await scene.free()
        scene.wait("l1", "light")
        await scene.settle()
        await scene.free()
        await scene.free()
        assert scene.took == ["h0", "l0", "h1", "l1"]

    run(scenario)


def test_a_woken_waiter_cancelled_before_it_runs_passes_the_slot_on() -> None:
    """Woken (granted), then its client leaves before it runs: the next waiter in turn
    takes the slot, and the cancelled one is the one that left the queue."""

    async def scenario(scene: Scene) -> None:
        scene.wait("a", "alice")
        scene.wait("b", "bob")
        await scene.settle()
        scene.pool.free["r"] = 1
        scene.queue.freed("r")  # a is woken ...
        scene.tasks["a"].cancel()  # ... and cancelled in the same turn of the loop
        await scene.settle()
        assert scene.took == ["b"]
        assert scene.tasks["a"].cancelled()
        assert scene.queue.total == 0

    run(scenario)


def test_a_woken_waiter_that_cannot_take_the_slot_passes_it_on() -> None:
    """Alice's pick finds nothing (say, it needs a stream the backend cannot give): the
    grant goes to Bob, Alice keeps her turn and waits on."""

    async def scenario(scene: Scene) -> None:
        scene.wait("a", "alice")
        scene.wait("b", "bob")
        await scene.settle()
        scene.pool.refuse.add("alice")
        await scene.free()
        assert scene.took == ["b"]
        scene.pool.refuse.clear()
        scene.wait("c", "carol")
        await scene.settle()
        await scene.free()
        assert scene.took == ["b", "a"]  # alice kept her turn: before carol
        assert not scene.queue.granted

    run(scenario)


def test_a_slot_taken_meanwhile_ends_the_grant_without_a_loop() -> None:
    """The slot was granted, then taken by someone outside the queue: every waiter
    declines it once, and it is dropped (no ping-pong between them)."""

    async def scenario(scene: Scene) -> None:
        for name in ("a", "b", "c"):
            scene.wait(name, name)
        await scene.settle()
        scene.queue.freed("r")  # but no free slot: taken meanwhile
        await scene.settle()
        assert scene.took == [] and not scene.queue.granted
        assert scene.queue.total == 3
        await scene.free()
        assert scene.took == ["a"]  # a was refunded: still first

    run(scenario)


def test_the_waiter_that_leaves_is_the_one_removed() -> None:
    """Alice's c leaves while a and b, ahead of it, wait (a for another backend): c is
    the one removed, so a still gets its backend's slot when one frees."""

    async def scenario(scene: Scene) -> None:
        scene.wait("a", "alice", usable={"s"})
        scene.wait("b", "alice")
        scene.wait("c", "alice")
        await scene.settle()
        scene.tasks["c"].cancel()
        await scene.settle()
        assert scene.tasks["c"].cancelled() and scene.queue.total == 2
        await scene.free("s")
        await scene.free("r")
        assert scene.took == ["a", "b"]

    run(scenario)


def test_a_waiter_woken_as_its_deadline_passes_takes_the_slot() -> None:
    """The grant and the deadline in the same turn of the loop: the grant wins (the slot
    is used, not lost), and the next slot is Bob's."""

    async def scenario(scene: Scene) -> None:
        scene.wait("a", "alice", seconds=0.05)
        scene.wait("b", "bob")
        await scene.settle()
        time.sleep(0.06)  # the loop stands still while a's deadline passes ...
        scene.pool.free["r"] = 1
        scene.queue.freed("r")  # ... and a is woken before its timer ran
        await scene.settle()
        assert scene.took == ["a"]
        await scene.free()
        assert scene.took == ["a", "b"]

    run(scenario)


def test_newcomers_queue_behind_waiters_that_could_use_their_backend() -> None:
    async def scenario(scene: Scene) -> None:
        assert not scene.queue.wanted("r")
        scene.wait("a", "alice")
        await scene.settle()
        assert scene.queue.wanted("r") and not scene.queue.wanted("other")
        scene.pool.free["r"] = 1
        scene.queue.freed("r")
        assert scene.queue.wanted("r")  # granted, not yet taken: still a's
        await scene.settle()
        assert not scene.queue.wanted("r")

    run(scenario)


def test_the_queue_is_bounded_per_client_and_in_total() -> None:
    async def scenario(scene: Scene) -> None:
        loop = asyncio.get_running_loop()
        scene.wait("a0", "alice")
        scene.wait("a1", "alice")
        await scene.settle()
        with pytest.raises(PoolBusy, match="QUEUE_MAX_PER_KEY") as full:
            await scene.queue.wait_for_slot(
                Seeker(scene.pool, "alice"), client="alice", priority=1, deadline=loop.time() + 5
            )
        assert full.value.status_code == 429 and full.value.headers["Retry-After"] == "5"
        scene.wait("b0", "bob")
        await scene.settle()
        with pytest.raises(PoolBusy, match="QUEUE_MAX_TOTAL"):
            await scene.queue.wait_for_slot(
                Seeker(scene.pool, "carol"), client="carol", priority=1, deadline=loop.time() + 5
            )
        assert scene.queue.total == 3

    run(scenario, max_per_client=2, max_total=3)


def test_a_wait_that_runs_out_is_pool_busy_and_leaves_nothing_behind() -> None:
    async def scenario(scene: Scene) -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(PoolBusy, match="the pool is busy"):
            await scene.queue.wait_for_slot(
                Seeker(scene.pool, "a"), client="a", priority=1, deadline=loop.time() + 0.05
            )
        assert scene.queue.total == 0

    run(scenario)


def test_nothing_usable_left_ends_the_wait_with_none() -> None:
    async def scenario(scene: Scene) -> None:
        loop = asyncio.get_running_loop()
        seeker = Seeker(scene.pool, "a", usable_ids=frozenset())
        found = await scene.queue.wait_for_slot(
            seeker, client="a", priority=1, deadline=loop.time() + 5
        )
        assert found is None

    run(scenario)


def test_a_slot_freed_without_a_word_is_found_by_the_poll() -> None:
    """A slot the queue was not told of (a registry change): taken at the next look."""

    async def scenario(scene: Scene) -> None:
        loop = asyncio.get_running_loop()
        scene.wait("a", "alice")
        await scene.settle()
        started = loop.time()
        scene.pool.free["r"] = 1  # no freed()
        deadline = started + 5 * POLL_SECONDS
        while not scene.took and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert scene.took == ["a"]

    run(scenario)


KEEP_MS = 500


def test_a_slot_freed_by_a_client_owed_a_turn_is_kept_for_its_next_request() -> None:
    """Light (one request at a time) is served beside heavy. When light's request ends,
    its slot waits for light's next one, which comes a moment later: without that, every
    slot that ends with light's would be heavy's by the time light asks again."""

    async def scenario(scene: Scene) -> None:
        loop = asyncio.get_running_loop()
        for index in range(6):
            scene.wait(f"h{index}", "heavy")
        scene.wait("l0", "light")
        await scene.settle()
        for _ in range(3):
            await scene.free(by="heavy")
        assert scene.took == ["h0", "l0", "h1"]
        await scene.free(by="light")  # l0's end: light is owed the next turn
        assert scene.took == ["h0", "l0", "h1"] and scene.queue.kept
        await asyncio.sleep(0.05)
        scene.wait("l1", "light")  # ... and asks again at once: no need to wait out the keep
        await scene.settle()
        assert scene.took == ["h0", "l0", "h1", "l1"]
        assert not scene.queue.kept and not scene.queue.granted
        await scene.free(by="heavy")
        # Light does not come back: after the keep the slot is heavy's.
        await scene.free(by="light")
        assert scene.took == ["h0", "l0", "h1", "l1", "h2"] and scene.queue.kept
        started = loop.time()
        while len(scene.took) < 6 and loop.time() < started + 3 * KEEP_MS / 1000:
            await asyncio.sleep(0.005)
        assert scene.took == ["h0", "l0", "h1", "l1", "h2", "h3"]
        assert loop.time() - started >= 0.8 * KEEP_MS / 1000
        assert not scene.queue.kept and not scene.queue.granted

    run(scenario, anticipation_ms=KEEP_MS)  # (long: a loaded machine's loop is slow)


def test_a_slot_is_kept_only_for_a_client_owed_a_turn() -> None:
    """A waiting client's slot, or one of a client that had its share, goes on at once."""

    async def scenario(scene: Scene) -> None:
        for index in range(3):
            scene.wait(f"h{index}", "heavy")
        await scene.settle()
        await scene.free(by="heavy")  # heavy is waiting: its own next request is queued
        assert scene.took == ["h0"] and not scene.queue.kept
        scene.queue.left["light"] = scene.queue.clients["heavy"].turn.at + 3  # served ahead
        await scene.free(by="light")
        assert scene.took == ["h0", "h1"] and not scene.queue.kept
        await scene.free(by="")  # (who freed it unknown: no keep)
        assert scene.took == ["h0", "h1", "h2"]

    run(scenario)
