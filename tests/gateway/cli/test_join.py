"""`gateway-admin join` as a real process against a real gateway (two workers) and healthd
(#14 items 2 and 3): joined and routable, killed and deactivated after the grace,
restarted and re-attached to the same registration, Ctrl-C drains and leaves."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli.demo_backend import create_demo_app
from gateway.cli.join import next_backoff, sse_events, token_file
from tests.conftest import ADMIN_KEY
from tests.support import (
    BIN,
    GatewayProcess,
    ThreadedServer,
    clean_environment,
    process_settings,
    start_healthd,
    wait_for,
)

HEADERS = {"X-API-Key": ADMIN_KEY}
CLASS_KEY = "class-registration-key-2026"
GRACE = 2.0


def test_backoff_doubles_to_thirty_seconds() -> None:
    delays = [1.0]
    for _ in range(6):
        delays.append(next_backoff(delays[-1]))
    assert delays == [1, 2, 4, 8, 16, 30, 30]


def test_sse_events() -> None:
    lines = [
        "event: registered",
        'data: {"registration_id": "r"}',
        "",
        ": comment",
        "",
        "event: heartbeat",
        'data: {"health": "healthy",',
        'data: "draining": false}',
        "",
    ]
    assert list(sse_events(iter(lines))) == [
        ("registered", {"registration_id": "r"}),
        ("heartbeat", {"health": "healthy", "draining": False}),
    ]


@pytest.fixture
def pool(tmp_path: Path, database_url: str) -> Iterator[tuple[GatewayProcess, ThreadedServer]]:
    settings = process_settings(
        tmp_path,
        database_url,
        WORKERS="2",
        HEALTH_CHECK_INTERVAL_SECONDS="1",
        LEASE_HEARTBEAT_SECONDS="1",
        LEASE_GRACE_SECONDS=str(GRACE),
        REGISTRATION_KEYS=CLASS_KEY,
    )
    with (
        ThreadedServer(create_demo_app("laptop-model", chunk_interval_ms=0)) as backend,
        GatewayProcess(tmp_path, settings) as gateway,
    ):
        healthd = start_healthd(tmp_path, settings)
        try:
            yield gateway, backend
        finally:
            healthd.send_signal(signal.SIGTERM)
            healthd.wait(timeout=20)


def join(gateway: GatewayProcess, backend: ThreadedServer, config: Path) -> subprocess.Popen[str]:
    command = [str(BIN / "gateway-admin"), "join", "--gateway", gateway.url]
    command += ["--endpoint", backend.url, "--key", CLASS_KEY]
    return subprocess.Popen(
        command,
        env=clean_environment({"XDG_CONFIG_HOME": str(config)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def registrations(gateway: GatewayProcess) -> list[dict[str, Any]]:
    servers = httpx.get(
        f"{gateway.url}/admin/servers", params={"include_inactive": "true"}, headers=HEADERS
    ).json()
    assert isinstance(servers, list)
    return servers


def routable(gateway: GatewayProcess) -> bool:
    data = httpx.get(f"{gateway.url}/v1/models").json()["data"]
    return [entry["id"] for entry in data] == ["laptop-model"]


def test_a_host_joins_leaves_and_comes_back(
    pool: tuple[GatewayProcess, ThreadedServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, backend = pool
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))  # where the agent keeps its token
    agent = join(gateway, backend, config)
    try:
        wait_for(lambda: routable(gateway), timeout=20, what="the joined server routable")
        [server] = registrations(gateway)
        assert server["lease_connected_at"] is not None
        kept = token_file(gateway.url, backend.url, None)
        assert kept.exists() and oct(kept.stat().st_mode & 0o777) == "0o600"
        for _ in range(4):  # both workers route to it (the lease is held by one)
            answer = httpx.post(
                f"{gateway.url}/v1/chat/completions",
                json={"model": "laptop-model", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert answer.status_code == 200

        agent.send_signal(signal.SIGKILL)  # the laptop's lid closes
        agent.wait(timeout=10)
        killed = time.monotonic()
        wait_for(
            lambda: not registrations(gateway)[0]["is_active"],
            timeout=GRACE + 10,
            what="the registration deactivated after the grace",
        )
        assert time.monotonic() - killed >= GRACE - 0.2  # routable for the grace first
        wait_for(lambda: not routable(gateway), what="every worker to stop routing to it")

        agent = join(gateway, backend, config)  # the same token: the same registration

        def reattached() -> bool:
            again = registrations(gateway)
            assert [s["registration_id"] for s in again] == [server["registration_id"]]
            return bool(again[0]["is_active"] and again[0]["lease_connected_at"])

        wait_for(reattached, timeout=20, what="the same registration leased again")
        wait_for(lambda: routable(gateway), timeout=20, what="routable again")

        agent.send_signal(signal.SIGINT)  # Ctrl-C: drain, then leave
        output, _ = agent.communicate(timeout=20)
        assert agent.returncode == 0, output
        assert f"joined as {server['registration_id']}" in output and "drained" in output
        assert registrations(gateway)[0]["draining"] is True
        token = kept.read_text().strip()
        assert token not in output
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
