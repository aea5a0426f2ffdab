"""deploy/: units verified by systemd, scripts by shellcheck, and the scripts run for real
against temporary folders (systemctl replaced by a recorder)."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command

from gateway.cli.demo_backend import create_demo_app
from shared.db import Database, alembic_config, upgrade_to_head
from shared.models import ModelServer, utcnow
from shared.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.support import (
    BIN,
    REPO,
    GatewayProcess,
    ThreadedServer,
    clean_environment,
    process_settings,
    start_healthd,
    wait_for,
)

DEPLOY = REPO / "deploy"
SCRIPTS = sorted(DEPLOY.glob("*.sh"))
UNITS = sorted((DEPLOY / "systemd").iterdir())
# The cluster's template units, verified as the instances deploy/README.md enables.
INSTANCES = {"multiverse-gateway@8001.service": DEPLOY / "cluster" / "multiverse-gateway@.service"}


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Binaries stubbed at the units' paths, inside a temporary root."""
    prefix = tmp_path / "opt" / "multiverse"
    (prefix / ".venv" / "bin").mkdir(parents=True)
    for name in ("gateway", "healthd", "gateway-admin"):
        stub = prefix / ".venv" / "bin" / name
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "gateway.env").write_text("")
    units = {unit.name: unit for unit in UNITS} | INSTANCES
    for name, unit in units.items():
        text = unit.read_text().replace("/opt/multiverse", str(prefix))
        text = text.replace("/etc/multiverse", str(tmp_path / "etc"))
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(f"./{name}" for name in units)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_units_are_hardened_and_ordered() -> None:
    for name in ("multiverse-gateway.service", "multiverse-healthd.service"):
        text = (DEPLOY / "systemd" / name).read_text()
        for line in (
            "User=multiverse",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/multiverse /var/log/multiverse",
            "PrivateTmp=yes",
            "ProtectHome=yes",
            "EnvironmentFile=/etc/multiverse/gateway.env",
            "Requires=multiverse-migrate.service",
        ):
            assert line in text, f"{name}: {line}"
    migrate = (DEPLOY / "systemd" / "multiverse-migrate.service").read_text()
    assert "ExecStart=/opt/multiverse/.venv/bin/gateway-admin db upgrade" in migrate


def test_the_gateway_unit_waits_longer_than_the_shutdown_grace() -> None:
    """systemd must not kill the gateway while streams still have their grace to finish."""
    unit = (DEPLOY / "systemd" / "multiverse-gateway.service").read_text()
    stop_timeout = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert stop_timeout > Settings.model_fields["shutdown_grace_seconds"].default


def test_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck") or str(BIN / "shellcheck")
    result = subprocess.run(
        [shellcheck, "-x", *(str(s.relative_to(REPO)) for s in SCRIPTS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout


def test_gateway_takes_its_socket_from_systemd(tmp_path: Path, database_url: str) -> None:
    """Socket activation: LISTEN_FDS/LISTEN_PID and the socket as fd 3."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    environment = clean_environment(
        {"DATABASE_URL": database_url, "LOG_DIR": str(tmp_path), "LISTEN_FDS": "1", "PORT": "1"}
    )
    # As systemd does: the socket as fd 3, LISTEN_PID the pid that exec keeps.
    fd = listener.fileno()
    process = subprocess.Popen(
        ["bash", "-c", f'exec 3<&{fd}; LISTEN_PID=$$ exec "{BIN / "gateway"}"'],
        env=environment,
        cwd=tmp_path,
        pass_fds=(fd,),
        stdout=(tmp_path / "gateway.out").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200,
            timeout=30,
            what="the gateway on the inherited socket",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, (tmp_path / "gateway.out").read_text()
        listener.close()


def _env_file(tmp_path: Path, database: Path, port: int = 1) -> Path:
    env_file = tmp_path / "gateway.env"
    env_file.write_text(
        f"DATABASE_URL=sqlite:///{database}\nPORT={port}\nADMIN_API_KEY={ADMIN_KEY}\n"
    )
    return env_file


def _script_env(tmp_path: Path, env_file: Path, **extra: str) -> dict[str, str]:
    return clean_environment(
        {
            "ENV_FILE": str(env_file),
            "BACKUP_DIR": str(tmp_path / "backups"),
            "VENV": str(Path(sys.executable).parent.parent),
            "PATH": f"{BIN}:{os.environ['PATH']}",
            **extra,
        }
    )


@pytest.mark.sqlite_only("backup.sh backs up the SQLite file")
def test_backup_is_consistent_while_both_processes_write(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    db_path = Path(database_url.removeprefix("sqlite:///"))
    now = utcnow()
    with ThreadedServer(create_demo_app("m")) as backend:
        with database.writing() as session:
            for index in range(40):
                session.add(
                    ModelServer(
                        model_name="m",
                        endpoint_url=f"{backend.url}/b{index}",
                        registered_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                )
        settings = process_settings(
            tmp_path, database_url, HEALTH_CHECK_INTERVAL_SECONDS="1", RATE_LIMIT_PER_MINUTE="0"
        )
        healthd = start_healthd(tmp_path, settings)
        try:
            with GatewayProcess(tmp_path, settings):
                wait_for(lambda: _count(db_path, "health_checks") > 40, timeout=20)
                env = _script_env(tmp_path, _env_file(tmp_path, db_path), KEEP="2")
                for _ in range(3):
                    result = subprocess.run(
                        ["bash", str(DEPLOY / "backup.sh")],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=60,
                    )
                    assert result.returncode == 0, result.stderr
        finally:
            healthd.send_signal(signal.SIGTERM)
            assert healthd.wait(timeout=30) == 0
    backups = sorted((tmp_path / "backups").glob("multiverse-*.db.gz"))
    assert len(backups) in (1, 2)  # rotation keeps 2 (two may share a second)
    restored = tmp_path / "restored.db"
    restored.write_bytes(gzip.decompress(backups[-1].read_bytes()))
    with sqlite3.connect(restored) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("SELECT count(*) FROM model_servers").fetchone()[0] == 40
        assert connection.execute("SELECT count(*) FROM health_checks").fetchone()[0] > 0


def _count(db_path: Path, table: str) -> int:
    with sqlite3.connect(db_path, timeout=10) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """A clone of this repository one commit back, and the two commits."""
    prefix = tmp_path / "prefix"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(prefix)], check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=prefix, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "checkout", "--quiet", "--detach", "HEAD~1"], cwd=prefix, check=True)
    previous = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=prefix, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "remote", "remove", "origin"], cwd=prefix, check=True)
    yield prefix, previous, head


def _recording_systemctl(tmp_path: Path, env_file: Path) -> tuple[Path, Path]:
    """A systemctl that records its calls; restarting the migrate unit migrates for real."""
    log = tmp_path / "systemctl.log"
    stub = tmp_path / "systemctl"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> "{log}"\n'
        'if [ "$1" = restart ] && [ "$2" = multiverse-migrate.service ]; then\n'
        f'  set -a; . "{env_file}"; set +a\n'
        f'  exec "{BIN / "gateway-admin"}" db upgrade\n'
        "fi\n"
    )
    stub.chmod(0o755)
    return stub, log


def _database_at(tmp_path: Path, revision: str) -> Path:
    db_path = tmp_path / "data" / "multiverse.db"
    url = f"sqlite:///{db_path}"
    upgrade_to_head(url)
    command.downgrade(alembic_config(url), revision)
    return db_path


def _revision(db_path: Path) -> str:
    with sqlite3.connect(db_path) as connection:
        return str(connection.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def _run_update(
    tmp_path: Path, prefix: Path, ref: str, env_file: Path, systemctl: Path, health_url: str
) -> subprocess.CompletedProcess[str]:
    """deploy/update.sh on the temporary checkout, dependencies left as they are."""
    return subprocess.run(
        ["bash", str(DEPLOY / "update.sh"), ref],
        env=_script_env(
            tmp_path,
            env_file,
            PREFIX=str(prefix),
            SYSTEMCTL=str(systemctl),
            SKIP_INSTALL="1",
            HEALTH_URL=health_url,
        ),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_update_migrates_and_restarts(tmp_path: Path, checkout: tuple[Path, str, str]) -> None:
    prefix, _, head = checkout
    db_path = _database_at(tmp_path, "0002")
    env_file = _env_file(tmp_path, db_path)
    systemctl, calls = _recording_systemctl(tmp_path, env_file)

    with ThreadedServer(_health_app()) as health:
        result = _run_update(tmp_path, prefix, head, env_file, systemctl, f"{health.url}/health")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _revision(db_path) == _head_revision()
    assert calls.read_text().splitlines() == [
        "restart multiverse-migrate.service",
        "restart multiverse-healthd.service",
        "restart multiverse-gateway.service",
    ]
    assert _git_head(prefix) == head
    assert list((tmp_path / "backups").glob("multiverse-*.db.gz"))


def test_update_rolls_back_when_the_gateway_is_not_healthy(
    tmp_path: Path, checkout: tuple[Path, str, str]
) -> None:
    prefix, previous, head = checkout
    db_path = _database_at(tmp_path, "0002")
    env_file = _env_file(tmp_path, db_path)
    systemctl, calls = _recording_systemctl(tmp_path, env_file)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    dead_url = f"http://127.0.0.1:{dead_port}/health"
    result = _run_update(tmp_path, prefix, head, env_file, systemctl, dead_url)
    assert result.returncode != 0
    assert "rolled back" in result.stderr
    assert _git_head(prefix) == previous
    assert _revision(db_path) == "0002"  # the database came back from the backup
    assert "stop multiverse-gateway.service multiverse-healthd.service" in calls.read_text()


def _health_app() -> object:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(request: object) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/health", health)])


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _git_head(prefix: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=prefix, capture_output=True, text=True, check=True
    ).stdout.strip()


async def test_sigterm_lets_twenty_streams_finish(tmp_path: Path, database_url: str) -> None:
    """Graceful shutdown: stop accepting, finish the streams in flight, exit 0."""
    import asyncio

    settings = process_settings(tmp_path, database_url, RATE_LIMIT_PER_MINUTE="0")
    with ThreadedServer(create_demo_app("m", chunk_interval_ms=100)) as backend:
        gateway = GatewayProcess(tmp_path, settings).__enter__()
        assert gateway.process is not None
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                registered = await client.post(
                    f"{gateway.url}/admin/register",
                    json={"model_name": "m", "endpoint_url": backend.url},
                    headers={"X-API-Key": ADMIN_KEY},
                )
                assert registered.status_code == 201
                for _ in range(100):
                    models = (await client.get(f"{gateway.url}/v1/models")).json()["data"]
                    if models and models[0]["available_servers"] == 1:
                        break
                    await asyncio.sleep(0.05)
                started = asyncio.Event()
                first_bytes = 0

                async def stream() -> str:
                    nonlocal first_bytes
                    body = {
                        "model": "m",
                        "messages": [{"role": "user", "content": "x"}],
                        "stream": True,
                        "max_tokens": 20,
                    }
                    received = b""
                    async with client.stream(
                        "POST", f"{gateway.url}/v1/chat/completions", json=body
                    ) as response:
                        async for chunk in response.aiter_raw():
                            if not received:
                                first_bytes += 1
                                if first_bytes == 20:
                                    started.set()
                            received += chunk
                    return received.decode()

                tasks = [asyncio.create_task(stream()) for _ in range(20)]
                await asyncio.wait_for(started.wait(), 20)
                gateway.process.send_signal(signal.SIGTERM)
                bodies = await asyncio.wait_for(asyncio.gather(*tasks), 30)
            assert all(body.endswith("data: [DONE]\n\n") for body in bodies)
            assert all(body.count("data: ") == 22 for body in bodies)  # 20 + usage + DONE
            assert await asyncio.to_thread(gateway.process.wait, 30) == 0
        finally:
            gateway.__exit__(None, None, None)
