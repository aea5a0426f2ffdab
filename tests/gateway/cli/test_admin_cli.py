"""gateway-admin against a real gateway process and a real SQLite file."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from shared.db import alembic_config
from tests.conftest import ADMIN_KEY
from tests.support import BIN, GatewayProcess, ThreadedServer, clean_environment, process_settings


def admin(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "gateway-admin"), *args],
        cwd=cwd,
        env=clean_environment(env or {}),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def gateway_process(tmp_path: Path, database_url: str) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path, process_settings(tmp_path, database_url)) as process:
        yield process


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    before = admin("db", "current", cwd=tmp_path, env=env)
    assert before.returncode == 1 and "current: none" in before.stdout
    upgraded = admin("db", "upgrade", cwd=tmp_path, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert f"revision {head} (head)" in upgraded.stdout
    after = admin("db", "current", cwd=tmp_path, env=env)
    assert after.returncode == 0 and "up to date" in after.stdout


def register_demo(backend: ThreadedServer, connection: list[str], cwd: Path, *extra: str) -> str:
    registered = admin(
        "register",
        "--model",
        "demo",
        "--endpoint",
        backend.url,
        "--json",
        *extra,
        *connection,
        cwd=cwd,
    )
    assert registered.returncode == 0, registered.stderr
    registration_id: str = json.loads(registered.stdout)["registration_id"]
    return registration_id


def test_register_list_show_update_deregister(
    gateway_process: GatewayProcess, demo_backend: ThreadedServer, tmp_path: Path
) -> None:
    connection = ["--url", gateway_process.url, "--api-key", ADMIN_KEY]
    registration_id = register_demo(
        demo_backend,
        connection,
        tmp_path,
        "--student-id",
        "alice",
        "--tag",
        "gpu",
        "--backend-key",
        "cli-backend-secret",
    )

    table = admin("servers", *connection, cwd=tmp_path)
    assert table.returncode == 0
    header, row = table.stdout.strip().splitlines()
    assert header.split()[:3] == ["REGISTRATION_ID", "MODELS", "STATUS"]
    assert row.split() == [registration_id, "demo", "healthy", "yes", "0", "1", "gpu", "api",
                           "0", demo_backend.url, "alice"]  # fmt: skip

    listed = json.loads(admin("servers", "--json", *connection, cwd=tmp_path).stdout)
    assert [s["registration_id"] for s in listed] == [registration_id]

    shown = admin("show", registration_id, *connection, cwd=tmp_path)
    assert "serves                demo" in shown.stdout and "success" in shown.stdout
    # The short id `stats` shows is enough; a start no id has is one line and exit 1.
    short = admin("show", registration_id[:8], *connection, cwd=tmp_path)
    assert short.returncode == 0 and short.stdout == shown.stdout
    other = "0000" if not registration_id.startswith("0000") else "ffff"
    unknown = admin("drain", other, *connection, cwd=tmp_path)
    assert unknown.returncode == 1 and f"no server id starts with '{other}'" in unknown.stderr
    assert "cli-backend-secret" not in shown.stdout
    assert "backend key           set (hidden)" in shown.stdout

    updated = admin(
        "update", registration_id, "--priority", "3", "--json", *connection, cwd=tmp_path
    )
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["priority"] == 3

    gone = admin("deregister", registration_id, *connection, cwd=tmp_path)
    assert gone.returncode == 0 and registration_id in gone.stdout
    again = admin("deregister", registration_id, *connection, cwd=tmp_path)
    assert again.returncode == 1
    assert "no active registration" in again.stderr and "HTTP 404" in again.stderr


def test_a_server_of_every_listed_model_and_a_renamed_one(
    gateway_process: GatewayProcess, demo_backend: ThreadedServer, tmp_path: Path
) -> None:
    connection = ["--url", gateway_process.url, "--api-key", ADMIN_KEY]
    registered = admin(
        "register", "--endpoint", demo_backend.url, "--json", *connection, cwd=tmp_path
    )
    assert registered.returncode == 0, registered.stderr
    registration_id = json.loads(registered.stdout)["registration_id"]
    table = admin("servers", *connection, cwd=tmp_path)
    assert table.stdout.strip().splitlines()[1].split()[1:3] == ["*:", "demo"]

    renamed = admin(
        "update", registration_id, "--model", "chat", "--backend-model", "demo", "--json",
        *connection, cwd=tmp_path,
    )  # fmt: skip
    assert renamed.returncode == 0, renamed.stderr
    assert json.loads(renamed.stdout)["served_models"] == ["chat"]
    wrong = admin("update", registration_id, "--backend-model", "nope", *connection, cwd=tmp_path)
    assert wrong.returncode == 1 and "does not list model 'nope'" in wrong.stderr

    every = admin("update", registration_id, "--all-models", "--json", *connection, cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    server = json.loads(every.stdout)
    assert (server["model_name"], server["backend_model"]) == (None, None)
    assert server["served_models"] == ["demo"]


def test_a_host_drains_its_server_with_its_management_token(
    gateway_process: GatewayProcess, demo_backend: ThreadedServer, tmp_path: Path
) -> None:
    connection = ["--url", gateway_process.url, "--api-key", ADMIN_KEY]
    registered = admin("register", "--endpoint", demo_backend.url, *connection, cwd=tmp_path)
    assert registered.returncode == 0, registered.stderr
    token = registered.stdout.split("manages this registration): ")[1].strip()
    registration_id = registered.stdout.split()[1]
    own = ["--url", gateway_process.url]
    env = {"GATEWAY_MANAGEMENT_TOKEN": token}
    drained = admin("drain", registration_id, *own, cwd=tmp_path, env=env)
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.strip() == f"draining {registration_id}"
    table = admin("servers", *connection, cwd=tmp_path)
    assert "healthy,draining" in table.stdout
    listing = admin("servers", *own, cwd=tmp_path, env=env)  # its own registration (#21)
    assert listing.returncode == 0 and registration_id in listing.stdout
    resumed = admin("undrain", registration_id, "--management-token", token, *own, cwd=tmp_path)
    assert resumed.returncode == 0 and token not in resumed.stdout + resumed.stderr


def test_key_and_url_come_from_the_environment(
    gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    env = {"GATEWAY_URL": gateway_process.url, "ADMIN_API_KEY": ADMIN_KEY}
    result = admin("servers", cwd=tmp_path, env=env)
    assert result.returncode == 0 and "no servers registered" in result.stdout


def test_errors_are_one_clear_line(gateway_process: GatewayProcess, tmp_path: Path) -> None:
    wrong = admin("servers", "--url", gateway_process.url, "--api-key", "nope", cwd=tmp_path)
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == "error: invalid admin API key (HTTP 403)"
    missing = admin("servers", "--url", gateway_process.url, cwd=tmp_path)
    assert missing.returncode == 1 and "no admin key" in missing.stderr
    bad = admin(
        "register",
        "--model",
        "x" * 257,
        "--endpoint",
        "ftp://h",
        "--url",
        gateway_process.url,
        "--api-key",
        ADMIN_KEY,
        cwd=tmp_path,
    )
    assert bad.returncode == 1 and "model_name" in bad.stderr and "HTTP 400" in bad.stderr


def test_unreachable_gateway(tmp_path: Path) -> None:
    result = admin("servers", "--url", "http://127.0.0.1:9", "--api-key", "k", cwd=tmp_path)
    assert result.returncode == 1 and "cannot reach the gateway" in result.stderr


def test_check_command(
    gateway_process: GatewayProcess, demo_backend: ThreadedServer, tmp_path: Path
) -> None:
    connection = ["--url", gateway_process.url, "--api-key", ADMIN_KEY]
    registration_id = register_demo(demo_backend, connection, tmp_path)
    result = admin("check", registration_id, *connection, cwd=tmp_path)
    assert result.returncode == 0 and f"check requested for {registration_id}" in result.stdout
