"""healthd against real HTTP backends and a real SQLite file (TC-HEALTH-001..005)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.cli.demo_backend import create_demo_app
from healthd.daemon import Daemon
from shared.db import Database
from shared.models import HealthCheck, ModelServer, utcnow
from shared.settings import Settings
from shared.upstream import probe_transport
from shared.urls import system_resolver
from tests.conftest import ADMIN_KEY
from tests.databases import write_lock_held
from tests.support import (
    GatewayProcess,
    ThreadedServer,
    free_port,
    process_settings,
    start_healthd,
)


class Switchable:
    """A backend whose /v1/models can be turned off (HTTP 503) and on again."""

    def __init__(self) -> None:
        self.up = True
        self.app = Starlette(routes=[Route("/v1/models", self.models)])

    async def models(self, request: Request) -> Response:
        if not self.up:
            return JSONResponse({"error": "down"}, status_code=503)
        return JSONResponse({"object": "list", "data": [{"id": "m"}]})


def add_server(database: Database, url: str, **fields: Any) -> str:
    now = utcnow()
    server = ModelServer(
        model_name="m",
        endpoint_url=url,
        registered_at=now,
        created_at=now,
        updated_at=now,
        **fields,
    )
    with database.writing() as session:
        session.add(server)
    return server.id


def row(database: Database, server_id: str) -> ModelServer:
    with database.reading() as session:
        server = session.get(ModelServer, server_id)
        assert server is not None
        return server


def checks(database: Database, server_id: str) -> list[HealthCheck]:
    with database.reading() as session:
        return list(
            session.scalars(
                select(HealthCheck)
                .where(HealthCheck.server_id == server_id)
                .order_by(HealthCheck.checked_at)
            )
        )


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(condition):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(settings: Settings, database: Database) -> AsyncIterator[Daemon]:
    stop = asyncio.Event()
    transport = probe_transport(settings, system_resolver)
    daemon = Daemon(settings, database, transport)
    task = asyncio.create_task(daemon.run(stop))
    try:
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
        transport.close()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(health_check_interval_seconds=1, health_check_timeout_seconds=1)


async def test_healthy_backend_is_marked_healthy(settings: Settings, database: Database) -> None:
    """TC-HEALTH-001, with history, reported models and metrics."""
    with ThreadedServer(create_demo_app("m")) as backend:
        server_id = add_server(database, backend.url)
        async with running(settings, database):
            await until(lambda: len(checks(database, server_id)) >= 2, 10, "two checks")
    server = row(database, server_id)
    assert server.health_status == "healthy" and server.status_changed_at is not None
    assert server.reported_models == ["m"]
    assert server.success_rate == 100.0 and server.uptime_percent == 100.0
    assert server.avg_response_time_ms is not None and server.last_checked_at is not None
    assert all(c.status == "success" for c in checks(database, server_id))


async def test_failures_are_counted_with_backoff(settings: Settings, database: Database) -> None:
    """TC-HEALTH-002 and 003: unhealthy at the first failure, then counted."""
    server_id = add_server(database, f"http://127.0.0.1:{free_port()}", health_status="healthy")
    async with running(settings, database):
        await until(lambda: row(database, server_id).consecutive_failures >= 3, 10, "3 failures")
    server = row(database, server_id)
    assert server.health_status == "unhealthy"
    assert "refused" in (server.last_error or "") or "connect" in (server.last_error or "")
    assert server.is_active  # AUTO_DEREGISTER is off by default
    history = checks(database, server_id)
    assert [c.status for c in history][:3] == ["failure"] * 3
    gaps = [(b.checked_at - a.checked_at).total_seconds() for a, b in pairwise(history)]
    assert gaps[0] >= 0.8  # backoff: the first retry waits about a second


async def test_auto_deregistration(
    make_settings: Callable[..., Settings], database: Database
) -> None:
    """TC-HEALTH-004."""
    settings = make_settings(
        health_check_interval_seconds=1, auto_deregister=True, max_consecutive_failures=2
    )
    server_id = add_server(database, f"http://127.0.0.1:{free_port()}")
    async with running(settings, database):
        await until(lambda: not row(database, server_id).is_active, 10, "deregistration")
    server = row(database, server_id)
    assert server.consecutive_failures == 2 and server.deregistered_at is not None


async def test_recovery_is_seen_on_the_backoff_schedule(
    settings: Settings, database: Database
) -> None:
    switchable = Switchable()
    with ThreadedServer(switchable.app) as backend:
        server_id = add_server(database, backend.url)
        async with running(settings, database):
            await until(lambda: row(database, server_id).health_status == "healthy", 10, "up")
            switchable.up = False
            await until(lambda: row(database, server_id).health_status == "unhealthy", 10, "down")
            switchable.up = True
            await until(lambda: row(database, server_id).health_status == "healthy", 10, "back")
    failures = [c for c in checks(database, server_id) if c.status == "failure"]
    assert failures and "HTTP 503" in (failures[0].error_message or "")


async def test_resumes_after_a_restart(settings: Settings, database: Database) -> None:
    """TC-HEALTH-005: a new daemon picks up from the database."""
    with ThreadedServer(create_demo_app("m")) as backend:
        server_id = add_server(database, backend.url)
        async with running(settings, database):
            await until(lambda: len(checks(database, server_id)) >= 1, 10, "first check")
        before = len(checks(database, server_id))
        async with running(settings, database):
            await until(lambda: len(checks(database, server_id)) > before, 10, "checks again")


async def test_a_gateway_mark_is_probed_at_once(settings: Settings, database: Database) -> None:
    """The gateway marked a backend unhealthy after a failed request: healthd looks again
    right away instead of waiting for the interval, and restores it."""
    slow = settings.model_copy(update={"health_check_interval_seconds": 300})
    with ThreadedServer(create_demo_app("m")) as backend:
        server_id = add_server(database, backend.url)
        async with running(slow, database):
            await until(lambda: row(database, server_id).health_status == "healthy", 10, "up")
            with database.writing() as session:
                session.execute(
                    update(ModelServer)
                    .where(ModelServer.id == server_id)
                    .values(health_status="unhealthy", status_changed_at=utcnow())
                )
            await until(lambda: row(database, server_id).health_status == "healthy", 5, "back")


async def test_deregistered_during_its_probe(settings: Settings, database: Database) -> None:
    from tests.fakes import models_answering

    with ThreadedServer(models_answering(200, '{"data": []}', delay=0.8)) as backend:
        server_id = add_server(database, backend.url)
        async with running(settings, database):
            await asyncio.sleep(0.3)  # the probe is under way (it takes 0.8 s)
            with database.writing() as session:
                session.execute(
                    update(ModelServer).where(ModelServer.id == server_id).values(is_active=False)
                )
            await asyncio.sleep(1.5)
    assert checks(database, server_id) == []
    assert row(database, server_id).health_status == "unknown"


def test_gateway_and_healthd_as_two_processes(tmp_path: Path, database_url: str) -> None:
    """The two processes share only the database: a backend that dies stops getting
    traffic, and traffic resumes when it comes back."""
    port = free_port()
    settings = process_settings(
        tmp_path,
        database_url,
        RATE_LIMIT_PER_MINUTE="0",
        HEALTH_CHECK_INTERVAL_SECONDS="1",
        HEALTH_CHECK_TIMEOUT_SECONDS="1",
    )
    backend = ThreadedServer(create_demo_app("m"), port=port).__enter__()
    with GatewayProcess(tmp_path, settings) as gateway:
        healthd = start_healthd(tmp_path, settings)
        try:
            headers = {"X-API-Key": ADMIN_KEY}
            httpx.post(
                f"{gateway.url}/admin/register",
                json={"model_name": "m", "endpoint_url": backend.url},
                headers=headers,
            ).raise_for_status()

            def available() -> int:
                data = httpx.get(f"{gateway.url}/v1/models?all=true").json()["data"]
                return int(data[0]["available_servers"]) if data else -1

            body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            asyncio.run(until(lambda: available() == 1, 10, "routable"))
            backend.__exit__(None, None, None)  # the laptop closes
            asyncio.run(until(lambda: available() == 0, 10, "healthd to notice"))
            response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body)
            assert response.status_code == 503
            backend = ThreadedServer(create_demo_app("m"), port=port).__enter__()
            asyncio.run(until(lambda: available() == 1, 10, "recovery"))
            response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body)
            assert response.status_code == 200
        finally:
            healthd.send_signal(signal.SIGTERM)
            assert healthd.wait(timeout=20) == 0
            backend.__exit__(None, None, None)


async def test_force_check_through_the_admin_api(
    start_gateway: Callable[..., ThreadedServer], settings: Settings, database: Database
) -> None:
    """The UI's "Force Health Check": the admin API writes a request, healthd takes it."""
    slow = settings.model_copy(update={"health_check_interval_seconds": 300})
    gateway = start_gateway()
    with ThreadedServer(create_demo_app("m")) as backend:
        server_id = add_server(database, backend.url)
        async with running(slow, database):
            await until(lambda: len(checks(database, server_id)) == 1, 10, "first check")
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"{gateway.url}/admin/servers/{server_id}/check",
                    headers={"X-API-Key": ADMIN_KEY},
                )
            assert response.status_code == 202
            assert response.json() == {"registration_id": server_id, "status": "check requested"}
            await until(lambda: len(checks(database, server_id)) == 2, 3, "the forced check")
        async with httpx.AsyncClient() as client:
            missing = await client.post(
                f"{gateway.url}/admin/servers/nope/check", headers={"X-API-Key": ADMIN_KEY}
            )
        assert missing.status_code == 404


async def test_dns_failure_is_a_failed_check(
    make_settings: Callable[..., Settings], database: Database
) -> None:
    settings = make_settings(health_check_interval_seconds=1, allow_private_backends=False)

    async def no_such_name(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    server_id = add_server(database, "http://no-such-host.example")
    stop = asyncio.Event()
    daemon = Daemon(settings, database, probe_transport(settings, no_such_name))
    task = asyncio.create_task(daemon.run(stop))
    await until(lambda: row(database, server_id).health_status == "unhealthy", 10, "mark")
    stop.set()
    await asyncio.wait_for(task, 15)
    assert "could not be resolved" in (row(database, server_id).last_error or "")


async def test_a_locked_database_delays_results_but_loses_none(
    settings: Settings, database: Database, database_url: str
) -> None:
    """Another process holds the write lock past the busy timeout: healthd keeps its
    results, backs off, and writes them all once the lock is gone."""
    with ThreadedServer(create_demo_app("m")) as backend:
        server_id = add_server(database, backend.url)
        async with running(settings, database) as daemon:
            await until(lambda: len(checks(database, server_id)) >= 1, 10, "first check")
            with write_lock_held(database_url):
                await until(lambda: len(daemon.pending) >= 2, 20, "results to pile up")
                probes_while_locked = len(daemon.pending)
            await until(lambda: not daemon.pending, 20, "the backlog to be written")
        assert len(checks(database, server_id)) >= 1 + probes_while_locked


async def test_unchanged_results_write_history_only(settings: Settings, database: Database) -> None:
    """A result that changes nothing adds a history row and leaves the server row alone;
    the API still shows the latest check time (from the history)."""
    with ThreadedServer(create_demo_app("m")) as backend:
        server_id = add_server(database, backend.url)
        async with running(settings, database):
            await until(lambda: len(checks(database, server_id)) >= 3, 10, "three checks")
    history = checks(database, server_id)
    server = row(database, server_id)
    assert server.last_checked_at == history[0].checked_at  # written once, at the transition

    from gateway.admin.server_views import read_server  # the admin API's view of it

    assert read_server(database, server_id).last_checked_at == history[-1].checked_at


def test_history_is_pruned_to_the_last_hundred(database: Database) -> None:
    from datetime import timedelta

    from healthd.store import prune_history

    server_id = add_server(database, "http://x")
    start = utcnow()
    with database.writing() as session:
        for index in range(130):
            session.add(
                HealthCheck(
                    server_id=server_id,
                    checked_at=start + timedelta(seconds=index),
                    status="success",
                )
            )
    assert prune_history(database) == 30
    kept = checks(database, server_id)
    assert len(kept) == 100 and kept[0].checked_at == start + timedelta(seconds=30)
