"""A backend's max_concurrent across instances (REDIS_URL): its slots in Redis, taken
only under the limit, given back by structure, lapsing with a dead instance, and the
failure policy when Redis is away. Against the machine's Redis (skipped where none
runs); the last test runs two gateway processes on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.admission.backend_slots import LOCAL, BackendSlots, CapacityUnknown
from shared.cluster.redis_client import FailureMode, SharedRedis
from tests.gateway.proxy.test_proxy import register
from tests.shared.cluster.test_instances import chat, gateways
from tests.support import ThreadedServer, free_port, wait_for

NOW = 1_800_000_000.0


@pytest.fixture
async def shared(redis_url: str, redis_prefix: str) -> AsyncIterator[SharedRedis]:
    shared = SharedRedis(redis_url, prefix=redis_prefix)
    yield shared
    await shared.close()


def slots(store: SharedRedis, clock: list[float], lapse: float = 30) -> BackendSlots:
    return BackendSlots(store, lapse=lapse, clock=lambda: clock[0])


async def test_slots_are_taken_under_the_limit_only_whichever_instance_asks(
    shared: SharedRedis,
) -> None:
    clock = [NOW]
    one, other = slots(shared, clock), slots(shared, clock)
    first = await one.take("r", 2)
    second = await other.take("r", 2)
    assert first and second and first != second
    assert await one.take("r", 2) is None and await other.take("r", 2) is None
    assert await one.take("s", 2)  # another registration counts apart
    await one.release("r", first)
    assert await other.take("r", 2)
    assert "r" not in one.mine and other.mine["r"]


async def test_a_held_slot_is_given_back_however_the_block_ends_and_then_the_queue_hears(
    shared: SharedRedis,
) -> None:
    clock = [NOW]
    one, other = slots(shared, clock), slots(shared, clock)
    freed: list[str] = []
    with pytest.raises(RuntimeError):
        async with one.held("r", 1, lambda: freed.append("r")) as taken:
            assert taken
            async with other.held("r", 1, lambda: freed.append("other")) as refused:
                assert not refused  # full: nothing held, nothing freed
            raise RuntimeError("the backend broke")
    assert freed == ["r"]
    async with other.held("r", 1, lambda: None) as taken:
        assert taken


async def test_the_slots_of_an_instance_that_died_lapse_and_a_live_ones_are_renewed(
    shared: SharedRedis,
) -> None:
    clock = [NOW]
    dead, live, newcomer = (slots(shared, clock, lapse=3) for _ in range(3))
    assert await dead.take("r", 2)
    assert await live.take("r", 2)
    key = shared.key("slots", "r")
    await shared.client.expire(key, 5)  # as if the last take were long ago
    keeper = asyncio.create_task(live.keep_alive())
    try:
        clock[0] += 2
        await wait_for_renewal(shared, live, NOW + 5)
        assert await shared.client.ttl(key) > 5  # the set is kept while a slot is held
        clock[0] += 2  # past the first lapse (NOW + 3): the dead one's slot is free
        assert await newcomer.take("r", 2)
        assert await newcomer.take("r", 2) is None  # the live one's still counts
    finally:
        keeper.cancel()


async def wait_for_renewal(store: SharedRedis, holder: BackendSlots, at_least: float) -> None:
    (member,) = holder.mine["r"]
    key = store.key("slots", "r")
    async with asyncio.timeout(5):
        while (await store.client.zscore(key, member) or 0) < at_least:
            await asyncio.sleep(0.05)


async def test_a_slot_whose_answer_was_lost_is_removed_not_left_to_lapse(
    shared: SharedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script ran on Redis but its answer never came back (a timeout: fail-open
    counts locally): the member it added is removed, not left holding a slot on every
    instance for a whole lapse."""
    clock = [NOW]
    one, other = slots(shared, clock), slots(shared, clock)
    real_attempt = shared.attempt
    lost = [True]

    async def answer_lost(operation, fallback):  # type: ignore[no-untyped-def]
        result = await real_attempt(operation, fallback=fallback)
        if lost:
            lost.clear()
            return fallback()  # as when the reply timed out after the script ran
        return result

    monkeypatch.setattr(shared, "attempt", answer_lost)
    assert await one.take("r", 1) == LOCAL

    async def free() -> bool:
        return bool(await other.take("r", 1))

    deadline = time.monotonic() + 5
    while not await free():
        assert time.monotonic() < deadline, "the lost member still holds the only slot"
        await asyncio.sleep(0.02)


async def test_an_unreachable_redis_counts_locally_or_refuses_as_set() -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    opened = SharedRedis(nowhere, mode=FailureMode.OPEN)
    closed = SharedRedis(nowhere, mode=FailureMode.CLOSED)
    clock = [NOW]
    try:
        freed: list[bool] = []
        async with slots(opened, clock).held("r", 1, lambda: freed.append(True)) as taken:
            assert taken  # this worker's own count decides meanwhile
        assert freed == [True]
        assert await slots(opened, clock).take("r", 1) == LOCAL
        with pytest.raises(CapacityUnknown) as refused:
            await slots(closed, clock).take("r", 1)
        assert refused.value.status_code == 429
    finally:
        await opened.close()
        await closed.close()


class HoldingBackend:
    """A chat backend that holds each request `hold` seconds, counting how many it holds
    at once (the most is what the limit is about)."""

    def __init__(self, hold: float = 0.4) -> None:
        self.hold = hold
        self.lock = threading.Lock()
        self.now = self.most = self.served = 0
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.models),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        )

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "held", "object": "model"}]})

    async def chat(self, request: Request) -> JSONResponse:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.hold)
        finally:
            with self.lock:
                self.now -= 1
                self.served += 1
        message = {"role": "assistant", "content": "ok"}
        return JSONResponse(
            {
                "id": "c",
                "object": "chat.completion",
                "model": "held",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


def answers_ok(url: str) -> bool:
    return chat(url, "held").status_code == 200


def test_a_backends_max_concurrent_holds_across_two_instances(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    """Two gateway processes, one Redis: a server of max_concurrent 2 never has more than
    2 requests at once of 6 sent together through both, and every one is answered."""
    backend = HoldingBackend()
    with (
        ThreadedServer(backend.app) as server,
        gateways(
            tmp_path, postgres_url, 2, REDIS_URL=redis_url, REDIS_KEY_PREFIX=redis_prefix
        ) as instances,
    ):
        rid = register(instances[0], "held", server.url, max_concurrent=2)  # type: ignore[arg-type]
        for gateway in instances:
            wait_for(functools.partial(answers_ok, gateway.url), timeout=5)
        backend.most = 0
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda n: chat(instances[n % 2].url, "held"), range(6)))
        assert [answer.status_code for answer in answers] == [200] * 6, [
            answer.text for answer in answers if answer.status_code != 200
        ]
        assert backend.most == 2
        taken = redis.Redis.from_url(redis_url)  # and every slot was given back
        wait_for(lambda: taken.zcard(f"{redis_prefix}:slots:{rid}") == 0, timeout=5)
        taken.close()


def test_a_request_full_elsewhere_waits_queue_timeout_seconds_in_all(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    """Found full on Redis, a request waits in the queue again and again: its
    QUEUE_TIMEOUT_SECONDS counts from its first wait, not from each."""
    backend = HoldingBackend(hold=0)
    settings = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": redis_prefix}
    with (
        ThreadedServer(backend.app) as server,
        gateways(tmp_path, postgres_url, 2, QUEUE_TIMEOUT_SECONDS="1", **settings) as instances,
        ThreadPoolExecutor(1) as pool,
    ):
        register(instances[0], "held", server.url, max_concurrent=1)  # type: ignore[arg-type]
        for gateway in instances:
            wait_for(functools.partial(answers_ok, gateway.url), timeout=5)
        backend.hold = 4.0
        holding = pool.submit(chat, instances[0].url, "held")
        wait_for(lambda: backend.now == 1, timeout=5, what="the first request at the backend")
        started = time.monotonic()
        refused = chat(instances[1].url, "held")
        assert refused.status_code == 429, refused.text
        assert "QUEUE_TIMEOUT_SECONDS" in refused.text
        assert time.monotonic() - started < 3.0
        assert holding.result().status_code == 200
