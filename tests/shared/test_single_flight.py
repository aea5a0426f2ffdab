"""One call in flight per key: shared by callers, kept when one of them gives up."""

from __future__ import annotations

import asyncio

import pytest

from shared.single_flight import SingleFlight


async def test_callers_meanwhile_share_one_call_per_key() -> None:
    calls: list[str] = []
    release = asyncio.Event()

    async def look_up(key: str) -> str:
        calls.append(key)
        await release.wait()
        return key.upper()

    flights: SingleFlight[str, str] = SingleFlight()
    waiting = [
        asyncio.ensure_future(flights.run(key, lambda key=key: look_up(key)))  # type: ignore[misc]
        for key in ("a", "a", "b", "a")
    ]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == ["A", "A", "B", "A"]
    assert calls == ["a", "b"]
    assert await flights.run("a", lambda: look_up("a")) == "A"  # a new flight once landed
    assert calls == ["a", "b", "a"]


async def test_a_caller_that_gives_up_leaves_the_call_to_the_others() -> None:
    release = asyncio.Event()

    async def slow() -> int:
        await release.wait()
        return 7

    flights: SingleFlight[None, int] = SingleFlight()
    impatient = asyncio.ensure_future(flights.run(None, slow))
    patient = asyncio.ensure_future(flights.run(None, slow))
    await asyncio.sleep(0)
    impatient.cancel()
    release.set()
    assert await patient == 7
    with pytest.raises(asyncio.CancelledError):
        await impatient
