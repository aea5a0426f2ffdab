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
        kept = token_file(gateway.url, None)
        # (routable as soon as the gateway registered it; the agent keeps its token when
        # the "registered" event reaches it, a moment later on a loaded machine)
        wait_for(kept.exists, timeout=10, what="the kept token")
        assert oct(kept.stat().st_mode & 0o777) == "0o600"
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


def join_logged(
    gateway: GatewayProcess, backend: ThreadedServer, config: Path
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """`join` as a process, its stdout and stderr in files (read at any time)."""
    out, err = config.parent / "join.out", config.parent / "join.err"
    command = [str(BIN / "gateway-admin"), "join", "--gateway", gateway.url]
    command += ["--endpoint", backend.url, "--key", CLASS_KEY]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        agent = subprocess.Popen(
            command,
            env=clean_environment({"XDG_CONFIG_HOME": str(config)}),
            stdout=stdout,
            stderr=stderr,
        )
    return agent, out, err


def leased(gateway: GatewayProcess) -> dict[str, Any] | None:
    servers = registrations(gateway)
    return servers[0] if servers and servers[0]["lease_connected_at"] else None


def test_a_deregistered_host_stays_out_and_join_says_why(
    pool: tuple[GatewayProcess, ThreadedServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#19 item 5: the admin's DELETE is final; the agent is told and exits."""
    gateway, backend = pool
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))  # where the agent keeps its token
    agent, out, err = join_logged(gateway, backend, config)
    try:
        server = wait_for(lambda: leased(gateway), timeout=20, what="the server joined")
        kept = token_file(gateway.url, None)
        wait_for(kept.exists, what="the agent to keep its token")
        deleted = httpx.delete(
            f"{gateway.url}/admin/register/{server['registration_id']}", headers=HEADERS
        )
        assert deleted.status_code == 200
        assert agent.wait(timeout=GRACE + 15) != 0  # it learns at its next attach
        assert "deregistered by the admin" in err.read_text(), (out.read_text(), err.read_text())
        assert not kept.exists()  # a revoked token is of no use: the next join registers anew
        for _ in range(3):  # healthd and both workers had their turns: still out
            assert [s["is_active"] for s in registrations(gateway)] == [False]
            assert not routable(gateway)
            time.sleep(1)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)


def test_a_frozen_agent_loses_its_lease_within_the_grace(
    pool: tuple[GatewayProcess, ThreadedServer], tmp_path: Path
) -> None:
    """#19 item 22: a stopped agent's kernel still takes the heartbeats; only its
    acknowledgements tell it is alive."""
    gateway, backend = pool
    agent, _, _ = join_logged(gateway, backend, tmp_path / "config")
    try:
        wait_for(lambda: leased(gateway) and routable(gateway), timeout=20, what="joined")
        agent.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        # heartbeat (1 s) + grace, then healthd's next round (1 s), and some slack
        wait_for(
            lambda: not registrations(gateway)[0]["is_active"],
            timeout=GRACE + 6,
            what="the frozen agent's registration deactivated",
        )
        assert time.monotonic() - stopped >= GRACE - 0.2
    finally:
        agent.send_signal(signal.SIGCONT)
        agent.kill()
        agent.wait(timeout=10)


def test_a_gateway_restart_ends_lease_streams_at_once_and_join_reconnects(
    tmp_path: Path, database_url: str
) -> None:
    """#19 item 12: SIGTERM does not wait SHUTDOWN_GRACE_SECONDS for a lease stream; the
    agent is told to reconnect, and does, to the next gateway process, quietly."""
    settings = process_settings(
        tmp_path,
        database_url,
        WORKERS="2",
        SHUTDOWN_GRACE_SECONDS="60",
        LEASE_HEARTBEAT_SECONDS="1",
        LEASE_GRACE_SECONDS="30",
        REGISTRATION_KEYS=CLASS_KEY,
    )
    with ThreadedServer(create_demo_app("laptop-model", chunk_interval_ms=0)) as backend:
        first = GatewayProcess(tmp_path, settings).__enter__()
        agent, out, err = join_logged(first, backend, tmp_path / "config")
        try:
            server = wait_for(lambda: leased(first), timeout=20, what="the server joined")
            assert first.process is not None
            first.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            first.process.wait(timeout=15)  # well under the 60 s grace
            assert time.monotonic() - started < 15
            first.__exit__(None, None, None)

            second = GatewayProcess(tmp_path, settings)
            second.port = first.port  # the agent knows one address
            second.environment["PORT"] = str(first.port)
            with second:

                def again() -> bool:
                    now = leased(second)
                    return now is not None and (
                        now["registration_id"] == server["registration_id"]
                        and now["lease_connected_at"] != server["lease_connected_at"]
                    )

                wait_for(again, timeout=30, what="join re-attached to the new gateway")
                agent.send_signal(signal.SIGINT)
                assert agent.wait(timeout=20) == 0
            output, errors = out.read_text(), err.read_text()
            assert "the gateway is restarting; reconnecting" in output, output
            assert errors == "", errors  # nothing reads like an error
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait(timeout=10)
