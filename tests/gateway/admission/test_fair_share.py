"""The issue's figure, through a real gateway process: a heavy client keeping 40 requests
in flight on a pool of 4 slots leaves a light client's p50 latency within 2x of what it
is on an idle pool (first come, first served, it would wait for ten rounds of the pool).
bench/fair_share.py prints the same figures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from bench.fair_share import CAPACITY, measure, register
from tests.gateway.accounting.test_metrics import value
from tests.raw_backend import RawBackend, Seen, Sleep, Step, Write, completion, http
from tests.support import ADMIN_KEY, GatewayProcess, process_settings

SERVICE = 0.2


def test_a_light_client_keeps_its_pace_beside_a_heavy_one(
    tmp_path: Path, database_url: str
) -> None:
    def answer_in_service_time(seen: Seen) -> list[Step]:
        # Every answer takes the same time: the slots free in step, the hardest case
        # for the light client (its next request comes a moment after its slot freed).
        return [Sleep(SERVICE), Write(http(200, completion()))]

    settings = process_settings(tmp_path, database_url, RATE_LIMIT_PER_MINUTE="0")
    with (
        RawBackend(answer_in_service_time) as backend,
        GatewayProcess(tmp_path, settings) as gateway,
    ):
        register(gateway.url, "m", backend.url, ADMIN_KEY)
        figures = asyncio.run(measure(gateway.url, "m", service=SERVICE, heavy=40, samples=20))
        assert backend.most_open >= CAPACITY
        text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
        waits = value(text, "gateway_queue_wait_seconds_count", model="m")
        assert waits >= len(figures.heavy) - CAPACITY  # (each heavy request past the first 4)
        assert value(text, "gateway_queue_length", model="m") == 0
    assert figures.refused == 0
    assert len(figures.heavy) >= 40
    # Without the fair queue the light client waits behind the heavy one's 36: ~10x.
    assert figures.ratio < 2.0, figures.lines()
