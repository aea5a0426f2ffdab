"""/metrics with several workers: a worker that died leaves no live gauge behind."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
from sqlalchemy import text

from gateway.cli.demo_backend import create_demo_app
from gateway.prometheus import retire_dead_workers
from shared.db import Database
from tests.support import ADMIN_KEY, GatewayProcess, ThreadedServer, process_settings, wait_for

GAUGE_FILE = re.compile(r"gauge_livemax_(\d+)\.db")


def workers_knowing(folder: Path, text: str) -> set[int]:
    """The pids whose live-max gauges mention `text` (a registration id, say)."""
    return {
        int(found.group(1))
        for path in folder.glob("gauge_livemax_*.db")
        if (found := GAUGE_FILE.fullmatch(path.name)) and text.encode() in path.read_bytes()
    }


def healthy_gauge(url: str, backend: str) -> float | None:
    text = httpx.get(f"{url}/metrics").text
    pattern = rf'^gateway_backend_healthy\{{backend="{backend}",model="m"\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_a_killed_worker_leaves_no_stale_gauge(tmp_path: Path, database_url: str) -> None:
    """Worker A says the backend is healthy, and is killed (uvicorn starts another);
    the backend turns unhealthy: /metrics says 0, not the dead worker's 1 (livemax)."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    settings = process_settings(
        tmp_path,
        database_url,
        WORKERS="2",
        RATE_LIMIT_PER_MINUTE="0",
        PROMETHEUS_MULTIPROC_DIR=str(folder),
    )
    with (
        ThreadedServer(create_demo_app("m")) as backend,
        GatewayProcess(tmp_path, settings) as gateway,
    ):
        registered = httpx.post(
            f"{gateway.url}/admin/register",
            json={"model_name": "m", "endpoint_url": backend.url},
            headers={"X-API-Key": ADMIN_KEY},
            timeout=30,
        )
        assert registered.status_code == 201, registered.text
        server_id = registered.json()["registration_id"]
        workers = wait_for(
            lambda: len(pids := workers_knowing(folder, server_id)) == 2 and pids,
            timeout=20,
            what="both workers to record the backend's health",
        )
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(workers_knowing(folder, "") - {victim}) >= 2,
            timeout=30,
            what="uvicorn to start a new worker",
        )
        database = Database.connect(database_url)
        with database.writing() as session:
            session.execute(text("UPDATE model_servers SET health_status = 'unhealthy'"))
        database.dispose()
        wait_for(
            lambda: healthy_gauge(gateway.url, server_id) == 0,
            timeout=15,
            what="gateway_backend_healthy to read 0",
        )
        assert not list(folder.glob(f"gauge_live*_{victim}.db"))


def test_only_ended_processes_are_retired(tmp_path: Path) -> None:
    for name in ("gauge_livesum_11.db", "gauge_livemax_11.db", "gauge_livemax_12.db"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "counter_11.db").write_bytes(b"")
    assert retire_dead_workers(tmp_path, running=lambda pid: pid == 12) == [11]
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == ["counter_11.db", "gauge_livemax_12.db"]
