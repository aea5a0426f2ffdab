"""Client limits in Redis (REDIS_URL): one count for every instance, the same decisions
as on one machine, in-flight requests that lapse with a dead instance, and the failure
policy when Redis is away. Against the machine's Redis (skipped where none runs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.admission.counters import DAY_SECONDS
from gateway.admission.limits import Limits
from gateway.admission.redis_counters import RedisCounters
from gateway.admission.shared_counters import SharedCounters
from shared.cluster.redis_client import FailureMode, SharedRedis
from shared.db import Database
from tests.fakes import ScriptedBackend
from tests.gateway.admission.test_client_keys import CHAT, issue_key, post, wait_known
from tests.gateway.proxy.test_proxy import register
from tests.support import GatewayProcess, ThreadedServer, free_port, process_settings

NOON = 20_000 * DAY_SECONDS + 12 * 3600.0


def store(tmp_path: Path, name: str, redis: SharedRedis, clock: list[float]) -> RedisCounters:
    folder = tmp_path / name
    folder.mkdir()
    local = SharedCounters(folder, clock=lambda: clock[0])
    return RedisCounters(redis, local, in_flight_lapse=30, clock=lambda: clock[0])


@pytest.fixture
async def two(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[RedisCounters, RedisCounters, list[float]]]:
    clock = [NOON]
    redis = SharedRedis(redis_url, prefix=redis_prefix)
    one, other = store(tmp_path, "a", redis, clock), store(tmp_path, "b", redis, clock)
    yield one, other, clock
    one.local.close()
    other.local.close()
    await redis.close()


SEQUENCES: list[tuple[Limits, list[tuple[str, int, int | None]]]] = [
    # (limits, [(admit|settle, tokens, used)]); each settle ends the oldest admitted
    (Limits(requests_per_minute=3), [("admit", 0, None)] * 4),
    (Limits(tokens_per_minute=100), [("admit", 60, None), ("admit", 60, None)]),
    (
        Limits(tokens_per_minute=100),
        [("admit", 60, None), ("settle", 60, 5), ("admit", 90, None), ("admit", 10, None)],
    ),
    (Limits(tokens_per_day=100), [("admit", 101, None), ("admit", 100, None), ("admit", 1, None)]),
    (
        Limits(max_concurrent=2),
        [("admit", 0, None)] * 3 + [("settle", 0, 0), ("admit", 0, None)],
    ),
]


@pytest.mark.parametrize(("limits", "steps"), SEQUENCES)
async def test_the_same_decisions_as_on_one_machine(
    two: tuple[RedisCounters, RedisCounters, list[float]],
    tmp_path: Path,
    limits: Limits,
    steps: list[tuple[str, int, int | None]],
) -> None:
    one, other, clock = two
    machine = (
        SharedCounters(tmp_path / "machine", clock=lambda: clock[0])
        if (tmp_path / "machine").mkdir() is None
        else None
    )
    assert machine is not None
    try:
        decisions = []
        for index, (step, tokens, used) in enumerate(steps):
            clock[0] += 0.5
            shared = (one, other)[index % 2]  # the instances take turns
            if step == "admit":
                far = await shared.admit("key:k", limits, tokens)
                near = machine.admit_now("key:k", limits, tokens)
                decisions.append((far.refusal and far.refusal.limit, far.standing))
                assert (far.refusal and far.refusal.limit) == (near.refusal and near.refusal.limit)
                assert far.standing == near.standing
            else:
                await one.settle("key:k", limits, tokens, used)
                machine.settle_now("key:k", limits, tokens, used)
        assert decisions
    finally:
        machine.close()


async def test_requests_in_flight_of_a_dead_instance_lapse(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    clock = [NOON]
    redis = SharedRedis(redis_url, prefix=redis_prefix)
    limits = Limits(max_concurrent=1)
    dead = RedisCounters(
        redis,
        SharedCounters(tmp_path, clock=lambda: clock[0]),
        in_flight_lapse=10,
        clock=lambda: clock[0],
    )
    alive = store(tmp_path, "alive", redis, clock)
    try:
        assert (await dead.admit("key:k", limits, 0)).refusal is None  # never settled
        refused = await alive.admit("key:k", limits, 0)
        assert refused.refusal is not None and refused.refusal.limit == "max_concurrent"
        clock[0] += 11
        assert (await alive.admit("key:k", limits, 0)).refusal is None
    finally:
        dead.local.close()
        alive.local.close()
        await redis.close()


async def test_redis_away_fails_open_on_this_machine_or_closed(tmp_path: Path) -> None:
    clock = [NOON]
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    limits = Limits(requests_per_minute=1)
    opened = SharedRedis(nowhere, mode=FailureMode.OPEN)
    closed = SharedRedis(nowhere, mode=FailureMode.CLOSED)
    serving = store(tmp_path, "open", opened, clock)
    refusing = store(tmp_path, "closed", closed, clock)
    try:
        assert (await serving.admit("key:k", limits, 0)).refusal is None
        again = await serving.admit("key:k", limits, 0)  # counted here meanwhile
        assert again.refusal is not None and again.refusal.limit == "requests_per_minute"
        shut = await refusing.admit("key:k", limits, 0)
        assert shut.refusal is not None and shut.refusal.limit == "counters_unavailable"
        assert shut.refusal.retry_after
    finally:
        serving.local.close()
        refusing.local.close()
        await opened.close()
        await closed.close()


def test_a_keys_limit_holds_across_two_instances(
    tmp_path: Path, database_url: str, database: Database, redis_url: str, redis_prefix: str
) -> None:
    """Two gateway instances (each with its own machine's counters) and one Redis: a key
    of 10 requests a minute gets 10 in all, whichever instance answers."""
    scripted = ScriptedBackend("m")
    with ThreadedServer(scripted.app) as server:
        settings = process_settings(
            tmp_path,
            database_url,
            RATE_LIMIT_PER_MINUTE="0",
            REDIS_URL=redis_url,
            REDIS_KEY_PREFIX=redis_prefix,
        )
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with (
            GatewayProcess(tmp_path / "a", settings) as first,
            GatewayProcess(tmp_path / "b", settings) as second,
        ):
            register(first, "m", server.url)  # type: ignore[arg-type]
            key, _ = issue_key(database, limits={"requests_per_minute": 10})
            for gateway in (first, second):
                wait_known(gateway, key)  # type: ignore[arg-type]
            statuses = [post((first, second)[n % 2], key, CHAT).status_code for n in range(24)]
            # The bucket refills one every 6 s: at most one more within these.
            assert statuses.count(200) in (10, 11), statuses
            assert set(statuses) <= {200, 429}


async def test_a_long_stream_keeps_its_place_in_flight(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """A request that outlasts the lapse (a long stream) is renewed while it lasts."""
    clock = [NOON]
    redis = SharedRedis(redis_url, prefix=redis_prefix)
    limits = Limits(max_concurrent=1)
    holder = RedisCounters(
        redis,
        SharedCounters(tmp_path, clock=lambda: clock[0]),
        in_flight_lapse=3,
        clock=lambda: clock[0],
    )
    other = store(tmp_path, "other", redis, clock)
    keeper = asyncio.create_task(holder.keep_alive())
    try:
        assert (await holder.admit("key:k", limits, 0)).refusal is None  # a long stream
        flying = redis.key("flying", "key:k")
        await redis.client.expire(flying, 2)  # as if the key's last request were long ago
        clock[0] += 2
        await asyncio.sleep(1.3)  # a renewal: now lapses at NOON + 5
        assert await redis.client.ttl(flying) > 2  # and the set is kept while it lasts
        clock[0] += 2  # past the first lapse (NOON + 3)
        refused = await other.admit("key:k", limits, 0)
        assert refused.refusal is not None and refused.refusal.limit == "max_concurrent"
        await holder.settle("key:k", limits, 0, 0)
        assert (await other.admit("key:k", limits, 0)).refusal is None
    finally:
        keeper.cancel()
        holder.local.close()
        other.local.close()
        await redis.close()


@pytest.mark.parametrize(
    ("limits", "reserved", "used", "written"),
    [
        (Limits(requests_per_minute=5), 10, 3, False),  # no token limit: nothing to correct
        (Limits(tokens_per_minute=100), 10, 10, False),  # used what it reserved
        (Limits(tokens_per_minute=100), 10, 3, True),  # tokens given back
        (Limits(max_concurrent=1), 0, 0, True),  # its in-flight member removed
    ],
)
async def test_a_settle_with_nothing_to_write_sends_nothing(
    two: tuple[RedisCounters, RedisCounters, list[float]],
    limits: Limits,
    reserved: int,
    used: int,
    written: bool,
) -> None:
    one, _, clock = two
    assert (await one.admit("key:k", limits, reserved)).refusal is None
    clock[0] += 10
    await one.settle("key:k", limits, reserved, used)
    last = await one.redis.client.hget(one.redis.key("counters", "key:k"), "ra")
    assert (float(str(last)) == NOON + 10) is written
