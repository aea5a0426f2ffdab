"""A model whose backends are all at max_concurrent: requests wait their turn in the fair
queue (gateway/admission/fair_queue.py) instead of a 503, each freed slot goes on at
once (streams too), a wait that runs out or a full queue is 429 "the pool is busy"
with Retry-After, and a client that leaves gives up its place."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from shared.db import Database
from tests.gateway.proxy.test_proxy import CHAT, register_routable, sdk, set_health
from tests.raw_backend import (
    LAST_CHUNK,
    SSE_HEAD,
    RawBackend,
    Seen,
    Sleep,
    Step,
    Write,
    chunk_event,
    chunked,
    completion,
    http,
)
from tests.support import ThreadedServer, wait_for

SERVICE = 0.1


def answer_after(seconds: float) -> Callable[[Seen], list[Step]]:
    """Each answer after `seconds`: whole, or as a short stream when one is asked."""

    def script(seen: Seen) -> list[Step]:
        if seen.json.get("stream"):
            events = chunked(chunk_event("hi")) + chunked(b"data: [DONE]\n\n") + LAST_CHUNK
            return [Sleep(seconds), Write(SSE_HEAD + events)]
        return [Sleep(seconds), Write(http(200, completion()))]

    return script


def slow_first(seconds: float) -> Callable[[Seen], list[Step]]:
    """The first request holds the slot for `seconds`; the others are quick."""
    seen_posts: list[Seen] = []

    def script(seen: Seen) -> list[Step]:
        seen_posts.append(seen)
        delay = seconds if len(seen_posts) == 1 else SERVICE
        return [Sleep(delay), Write(http(200, completion()))]

    return script


def test_a_full_pool_waits_its_turn_and_each_freed_slot_goes_on_at_once(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    """One slot, six requests (three streamed): one after the other, each as soon as the
    one before ended. Handed on only by the poll, every turn would wait up to 0.5 s."""
    gateway = start_gateway(rate_limit_per_minute=0, slow_start_seconds=0)
    with RawBackend(answer_after(SERVICE)) as backend:
        register_routable(gateway, backend.url, max_concurrent=1)

        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=20) as client:
                url = f"{gateway.url}/v1/chat/completions"
                return await asyncio.gather(
                    *(client.post(url, json={**CHAT, "stream": n % 2 == 1}) for n in range(6))
                )

        started = time.monotonic()
        answers = asyncio.run(scenario())
        elapsed = time.monotonic() - started
        assert [answer.status_code for answer in answers] == [200] * 6
        assert backend.posts == 6
        assert 6 * SERVICE <= elapsed < 6 * SERVICE + 0.9, elapsed  # one at a time, no gaps


def test_a_wait_that_runs_out_is_429_the_pool_is_busy(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    gateway = start_gateway(rate_limit_per_minute=0, queue_timeout_seconds=0.3)
    with RawBackend(slow_first(2.0)) as backend:
        register_routable(gateway, backend.url, max_concurrent=1)

        async def scenario() -> httpx.Response:
            async with httpx.AsyncClient(timeout=20) as client:
                url = f"{gateway.url}/v1/chat/completions"
                holder = asyncio.create_task(client.post(url, json=CHAT))
                await asyncio.to_thread(wait_for, lambda: backend.posts == 1)
                with pytest.raises(openai.RateLimitError) as refused:
                    await asyncio.to_thread(
                        sdk(gateway).chat.completions.create,
                        model="m",
                        messages=[{"role": "user", "content": "hi"}],
                    )
                answer = refused.value.response
                assert answer.headers["retry-after"] == "5"
                error = answer.json()["error"]
                assert error["type"] == "rate_limit_error" and error["code"] == 429
                assert error["message"].startswith("the pool is busy")
                assert "QUEUE_TIMEOUT_SECONDS" in error["message"]
                return await holder

        assert asyncio.run(scenario()).status_code == 200
        assert backend.posts == 1  # the refused request never reached the backend


def test_a_full_queue_is_429_at_once(start_gateway: Callable[..., ThreadedServer]) -> None:
    """QUEUE_MAX_PER_KEY=1: a slot busy, one request waiting, the next is refused at once;
    the waiting one is served when the slot frees."""
    gateway = start_gateway(rate_limit_per_minute=0, queue_max_per_key=1)
    with RawBackend(slow_first(1.0)) as backend:
        register_routable(gateway, backend.url, max_concurrent=1)

        async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response, float]:
            async with httpx.AsyncClient(timeout=20) as client:
                url = f"{gateway.url}/v1/chat/completions"
                holder = asyncio.create_task(client.post(url, json=CHAT))
                await asyncio.to_thread(wait_for, lambda: backend.posts == 1)
                waiting = asyncio.create_task(client.post(url, json=CHAT))
                await asyncio.sleep(0.2)  # (the waiting one is in the queue by then)
                started = time.monotonic()
                refused = await client.post(url, json=CHAT)
                took = time.monotonic() - started
                return await holder, await waiting, refused, took

        holder, waiting, refused, took = asyncio.run(scenario())
        assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
        assert "QUEUE_MAX_PER_KEY" in refused.json()["error"]["message"]
        assert took < 0.5  # at once, not after a wait
        assert holder.status_code == 200 and waiting.status_code == 200
        assert backend.posts == 2


def test_a_client_that_leaves_while_waiting_gives_up_its_place(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    """The first waiter's client gives up: it leaves the queue (the slot, when it frees,
    goes to the second waiter, not to a request nobody waits for), and the backend
    never hears of it."""
    gateway = start_gateway(rate_limit_per_minute=0)
    with RawBackend(slow_first(1.0)) as backend:
        register_routable(gateway, backend.url, max_concurrent=1)

        async def scenario() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(timeout=20) as client:
                url = f"{gateway.url}/v1/chat/completions"
                holder = asyncio.create_task(client.post(url, json=CHAT))
                await asyncio.to_thread(wait_for, lambda: backend.posts == 1)
                with pytest.raises(httpx.ReadTimeout):
                    await client.post(url, json={**CHAT, "user": "gone"}, timeout=0.3)
                second = asyncio.create_task(client.post(url, json=CHAT))
                return await holder, await second

        first, served = asyncio.run(scenario())
        assert first.status_code == 200 and served.status_code == 200
        assert backend.posts == 2
        assert all(b"gone" not in seen.body for seen in backend.requests)


def test_a_waiter_whose_backends_turn_unhealthy_gets_the_503(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    """Waiting for a slot is for a full pool; once nothing healthy is left it is the
    other case: 503 (RECOVERY_WAIT_SECONDS is 0), not a wait until the queue's timeout."""
    gateway = start_gateway(rate_limit_per_minute=0)
    with RawBackend(slow_first(3.0)) as backend:
        registration_id = register_routable(gateway, backend.url, max_concurrent=1)

        async def scenario() -> tuple[httpx.Response, float]:
            async with httpx.AsyncClient(timeout=20) as client:
                url = f"{gateway.url}/v1/chat/completions"
                holder = asyncio.create_task(client.post(url, json=CHAT))
                await asyncio.to_thread(wait_for, lambda: backend.posts == 1)
                waiting = asyncio.create_task(client.post(url, json=CHAT))
                await asyncio.sleep(0.2)
                started = time.monotonic()
                await asyncio.to_thread(set_health, database, registration_id, "unhealthy")
                answer = await waiting
                took = time.monotonic() - started
                await holder
                return answer, took

        answer, took = asyncio.run(scenario())
        assert answer.status_code == 503, answer.text
        assert "no healthy backend" in answer.json()["error"]["message"]
        assert took < 2.0  # the snapshot's reload and one look, not the holder's 3 s
