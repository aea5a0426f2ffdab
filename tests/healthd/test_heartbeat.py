"""healthd's heartbeat, seen by the gateway: real processes on one SQLite file."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from gateway.liveness import healthd_problem
from tests.support import (
    ADMIN_KEY,
    GatewayProcess,
    process_settings,
    start_healthd,
    wait_for,
)

HEADERS = {"X-API-Key": ADMIN_KEY}


@pytest.mark.parametrize(
    ("age", "up_for", "stale"),
    [
        (None, 1.0, False),  # starting together: no heartbeat yet is fine for a while
        (None, 3.5, True),  # ... but not for longer than healthd may be late
        (0.5, 100.0, False),
        (3.0, 100.0, False),
        (3.1, 100.0, True),
        (3.1, 0.0, True),  # an old heartbeat from before this gateway started
    ],
)
def test_when_healthd_counts_as_stopped(age: float | None, up_for: float, stale: bool) -> None:
    problem = healthd_problem(age, up_for, stale_after=3.0)
    assert (problem is not None) == stale
    assert problem is None or "healthd" in problem


def heartbeat_gauge(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(r"^gateway_healthd_heartbeat_age_seconds (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


def test_readiness_fails_naming_healthd_while_it_is_dead(tmp_path: Path, database_url: str) -> None:
    """SIGKILL healthd: within a bounded wait /health/ready answers 503 naming it, and
    /health, /admin/system and /metrics show the heartbeat's age; a new healthd makes
    the gateway ready again."""
    settings = process_settings(
        tmp_path, database_url, HEALTH_CHECK_INTERVAL_SECONDS="1", RATE_LIMIT_PER_MINUTE="0"
    )
    healthd = start_healthd(tmp_path, settings)
    try:
        with GatewayProcess(tmp_path, settings) as gateway:

            def ready() -> httpx.Response:
                return httpx.get(f"{gateway.url}/health/ready", timeout=5)

            wait_for(lambda: ready().status_code == 200, timeout=20, what="ready")
            health = httpx.get(f"{gateway.url}/health").json()
            assert health["healthd"] == "ok" and health["healthd_heartbeat_age_seconds"] < 3
            assert heartbeat_gauge(gateway.url) < 3

            healthd.kill()
            healthd.wait(timeout=10)
            answer = wait_for(
                lambda: (response := ready()).status_code == 503 and response,
                timeout=15,
                what="not ready after healthd died",
            )
            assert "healthd's last heartbeat is" in answer.json()["error"]["message"]
            health = httpx.get(f"{gateway.url}/health").json()
            assert health["healthd"] == "stale" and health["healthd_heartbeat_age_seconds"] >= 3
            system = httpx.get(f"{gateway.url}/admin/system", headers=HEADERS).json()
            assert system["healthd"]["status"] == "stale"
            assert system["healthd"]["stale_after_seconds"] == 3
            # (the gauge is set at the watcher's next round, readiness at the request)
            wait_for(lambda: heartbeat_gauge(gateway.url) > 3, timeout=5, what="the gauge")

            healthd = start_healthd(tmp_path, settings)
            wait_for(lambda: ready().status_code == 200, timeout=15, what="ready again")
            assert httpx.get(f"{gateway.url}/health").json()["healthd"] == "ok"
    finally:
        healthd.kill()
        healthd.wait(timeout=10)


@pytest.mark.sqlite_only("the database is a file here")
def test_healthd_stops_when_its_database_file_is_replaced(
    tmp_path: Path, database_url: str
) -> None:
    path = Path(database_url.removeprefix("sqlite:///"))
    settings = process_settings(tmp_path, database_url, HEALTH_CHECK_INTERVAL_SECONDS="1")
    healthd = start_healthd(tmp_path, settings)
    try:
        log = tmp_path / "logs" / "healthd.log"
        wait_for(lambda: log.exists() and "healthd started" in log.read_text(), timeout=20)
        path.rename(path.with_suffix(".moved"))
        path.write_bytes(b"")
        assert wait_for(lambda: healthd.poll() is not None, timeout=15) is not None
        assert healthd.returncode == 1
        assert "the database file is gone; healthd stops" in log.read_text()
    finally:
        if healthd.poll() is None:
            healthd.kill()
        healthd.wait(timeout=10)
