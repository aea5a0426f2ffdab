"""Several instances on one PostgreSQL database, as real processes (#22).

Two gateway processes and two healthd share a database: a registration made
through one gateway routes on the other within a second; the standby healthd
takes over within two intervals of the active one's kill -9, with no check row
lost or doubled; one gateway killed mid-stream leaves the other serving.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from gateway.cli.demo_backend import create_demo_app
from shared.cluster.listen import listen
from shared.db import Database, upgrade_to_head
from shared.models import HealthCheck, HealthdHeartbeat, ModelServer
from tests.support import (
    ADMIN_KEY,
    BIN,
    GatewayProcess,
    ThreadedServer,
    clean_environment,
    process_settings,
    start_healthd,
    wait_for,
)

HEADERS = {"X-API-Key": ADMIN_KEY}
INTERVAL = 2.0  # HEALTH_CHECK_INTERVAL_SECONDS of these tests


def register_at(url: str, model: str, endpoint: str) -> str:
    answer = httpx.post(
        f"{url}/admin/register",
        json={"model_name": model, "endpoint_url": endpoint},
        headers=HEADERS,
        timeout=15,
    )
    assert answer.status_code == 201, answer.text
    registration_id: str = answer.json()["registration_id"]
    return registration_id


def chat(url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)


@contextmanager
def gateways(
    tmp_path: Path, database_url: str, count: int, **extra: str
) -> Iterator[list[GatewayProcess]]:
    with ExitStack() as stack:
        started = []
        for n in range(count):
            folder = tmp_path / f"gateway-{n}"
            folder.mkdir()
            settings = process_settings(
                folder,
                database_url,
                RATE_LIMIT_PER_MINUTE="0",
                HEALTH_CHECK_INTERVAL_SECONDS=str(INTERVAL),
                **extra,
            )
            started.append(stack.enter_context(GatewayProcess(folder, settings)))
        yield started


@contextmanager
def healthds(
    tmp_path: Path, database_url: str, count: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes = []
    try:
        for n in range(count):
            folder = tmp_path / f"healthd-{n}"
            folder.mkdir()
            settings = process_settings(
                folder, database_url, HEALTH_CHECK_INTERVAL_SECONDS=str(INTERVAL)
            )
            processes.append(start_healthd(folder, settings))
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def test_a_registration_on_one_instance_routes_on_the_other_within_a_second(
    tmp_path: Path, postgres_url: str
) -> None:
    with (
        ThreadedServer(create_demo_app("alpha", chunk_interval_ms=0)) as backend,
        gateways(tmp_path, postgres_url, 2) as (first, second),
    ):
        assert chat(second.url, "alpha").status_code == 404
        register_at(first.url, "alpha", backend.url)
        registered = time.monotonic()
        wait_for(
            lambda: chat(second.url, "alpha").status_code == 200,
            timeout=1.0,
            what="the other instance to route the new model",
        )
        assert time.monotonic() - registered < 1.0


async def test_a_committed_registry_change_is_notified_to_listeners(
    postgres_url: str,
) -> None:
    """The trigger's NOTIFY reaches a LISTEN on another connection, at commit."""
    woken = asyncio.Event()
    listener = asyncio.create_task(listen(postgres_url, woken.set))
    try:
        await asyncio.wait_for(woken.wait(), 5)  # once at connect
        woken.clear()
        database = Database.connect(postgres_url)
        with database.writing() as session:
            session.add(ModelServer(id="x", endpoint_url="http://a.example", model_name="m"))
            session.flush()
            await asyncio.sleep(0.3)
            assert not woken.is_set(), "notified before the commit"
        await asyncio.wait_for(woken.wait(), 2)
        database.dispose()
    finally:
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener


def heartbeats(database: Database) -> dict[int, str]:
    """pid → role of the healthd that beat within the last two intervals."""
    with database.reading() as session:
        rows = session.execute(
            select(HealthdHeartbeat.pid, HealthdHeartbeat.role, HealthdHeartbeat.beat_at)
        ).all()
    now = datetime.now(rows[0][2].tzinfo) if rows else None
    return {
        pid: role
        for pid, role, beat_at in rows
        if now is not None and (now - beat_at).total_seconds() < 2 * INTERVAL
    }


def check_times(database: Database, server_id: str) -> list[datetime]:
    with database.reading() as session:
        return list(
            session.scalars(
                select(HealthCheck.checked_at)
                .where(HealthCheck.server_id == server_id)
                .order_by(HealthCheck.checked_at)
            )
        )


def test_kill_the_active_healthd_and_the_standby_takes_over_with_no_check_lost_or_doubled(
    tmp_path: Path, postgres_url: str
) -> None:
    database = Database.connect(postgres_url)
    with (
        ThreadedServer(create_demo_app("alpha", chunk_interval_ms=0)) as backend,
        gateways(tmp_path, postgres_url, 1) as (gateway,),
        healthds(tmp_path, postgres_url, 2) as processes,
    ):
        server_id = register_at(gateway.url, "alpha", backend.url)
        roles = wait_for(
            lambda: (
                (found := heartbeats(database))
                and sorted(found.values()) == ["active", "standby"]
                and found
            ),
            timeout=15,
            what="one active and one standby healthd",
        )
        # Both show in /health and /metrics.
        shown = wait_for(
            lambda: (
                len(httpx.get(f"{gateway.url}/health").json()["healthd_instances"]) == 2
                and httpx.get(f"{gateway.url}/health").json()
            ),
            timeout=5,
        )
        assert sorted(i["role"] for i in shown["healthd_instances"]) == ["active", "standby"]
        metrics = httpx.get(f"{gateway.url}/metrics").text
        assert 'gateway_healthd_instances{role="standby"} 1.0' in metrics
        assert 'gateway_healthd_instances{role="active"} 1.0' in metrics
        # Let the active one probe a few times, then kill it without a word.
        wait_for(lambda: len(check_times(database, server_id)) >= 3, timeout=4 * INTERVAL)
        active = next(pid for pid, role in roles.items() if role == "active")
        standby = next(pid for pid, role in roles.items() if role == "standby")
        assert active in {p.pid for p in processes}
        os.kill(active, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(
            lambda: heartbeats(database).get(standby) == "active",
            timeout=2 * INTERVAL,
            what="the standby to become active",
        )
        assert time.monotonic() - killed < 2 * INTERVAL
        before = len(check_times(database, server_id))
        wait_for(
            lambda: len(check_times(database, server_id)) >= before + 3,
            timeout=5 * INTERVAL,
            what="the new active healthd to probe",
        )
    database.dispose()
    # The first row is the registration's own probe, before healthd knew of it.
    times = check_times(Database.connect(postgres_url), server_id)[1:]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 4
    # Jitter is ±10 % of the interval; a check lost would leave a gap of two
    # intervals, a doubled one a gap near zero.
    assert all(gap > 0.5 * INTERVAL for gap in gaps), gaps
    assert all(gap < 1.6 * INTERVAL for gap in gaps), gaps


def test_a_second_healthd_on_sqlite_says_why_and_exits_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade_to_head(url)
    settings = process_settings(tmp_path, url)
    with healthds(tmp_path, url, 1) as (first,):
        database = Database.connect(url)
        wait_for(lambda: heartbeats(database), timeout=15, what="the first healthd's heartbeat")
        database.dispose()
        second = subprocess.run(
            [str(BIN / "healthd")],
            cwd=tmp_path,
            env=clean_environment(settings),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 2
        assert "another healthd" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert first.poll() is None


def test_a_gateway_killed_mid_stream_leaves_the_other_serving(
    tmp_path: Path, postgres_url: str
) -> None:
    with (
        ThreadedServer(create_demo_app("alpha", chunk_interval_ms=50)) as backend,
        gateways(tmp_path, postgres_url, 2) as (doomed, survivor),
    ):
        register_at(survivor.url, "alpha", backend.url)
        wait_for(lambda: chat(doomed.url, "alpha").status_code == 200, timeout=5)
        body = {
            "model": "alpha",
            "stream": True,
            "messages": [{"role": "user", "content": "tell me a long story " * 20}],
        }
        with (
            httpx.stream("POST", f"{doomed.url}/v1/chat/completions", json=body, timeout=30) as cut,
            httpx.stream(
                "POST", f"{survivor.url}/v1/chat/completions", json=body, timeout=30
            ) as kept,
        ):
            cut_lines, kept_lines = cut.iter_lines(), kept.iter_lines()
            assert next(cut_lines).startswith("data:")
            assert next(kept_lines).startswith("data:")
            assert doomed.process is not None
            doomed.process.kill()
            with pytest.raises(httpx.HTTPError):
                for _ in cut_lines:
                    pass
            rest = [line for line in kept_lines if line]
        assert rest[-1] == "data: [DONE]"
        assert chat(survivor.url, "alpha").status_code == 200
        # The database the killed one shared is still whole: the survivor writes to it.
        database = Database.connect(postgres_url)
        with database.reading() as session:
            assert session.scalar(text("SELECT count(*) FROM model_servers")) == 1
        database.dispose()
