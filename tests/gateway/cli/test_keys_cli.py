"""`gateway-admin keys` and `groups` as real subprocesses against a real gateway process."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.gateway.cli.test_admin_cli import admin
from tests.support import GatewayProcess, process_settings


@pytest.fixture
def gateway_process(tmp_path: Path, database_url: str) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path, process_settings(tmp_path, database_url)) as process:
        yield process


def listed_keys(gateway: GatewayProcess, **params: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{gateway.url}/admin/keys", params=params, headers={"X-API-Key": ADMIN_KEY})
    keys: list[dict[str, object]] = answer.json()
    return keys


def test_keys_are_created_listed_updated_and_revoked(
    gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    connection = ["--url", gateway_process.url, "--api-key", ADMIN_KEY]
    group = admin(
        "groups",
        "set",
        "cs101",
        "--requests-per-minute",
        "30",
        "--model",
        "demo",
        *connection,
        cwd=tmp_path,
    )
    assert group.returncode == 0, group.stderr
    assert "requests_per_minute=30" in group.stdout and "demo" in group.stdout

    created = admin(
        "keys",
        "create",
        "--owner",
        "alice",
        "--name",
        "laptop",
        "--group",
        "cs101",
        "--tokens-per-day",
        "50000",
        *connection,
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("mvk_") and len(key) == 36
    (row,) = listed_keys(gateway_process)
    key_id = str(row["id"])

    table = admin("keys", "list", *connection, cwd=tmp_path)
    assert table.returncode == 0 and key[:8] in table.stdout and key not in table.stdout
    assert "alice" in table.stdout and "active" in table.stdout
    shown = admin("keys", "show", key_id[:8], *connection, cwd=tmp_path)  # its short id
    assert "tokens_per_day=50000" in shown.stdout and "requests_per_minute=30" in shown.stdout
    assert key not in shown.stdout

    updated = admin(
        "keys",
        "update",
        key_id,
        "--tokens-per-day",
        "default",
        "--max-concurrent",
        "2",
        "--no-group",
        *connection,
        cwd=tmp_path,
    )
    assert updated.returncode == 0, updated.stderr
    (row,) = listed_keys(gateway_process)
    assert row["limits"] == {"max_concurrent": 2} and row["group"] is None
    contradiction = admin(
        "keys", "update", key_id, "--group", "cs101", "--no-group", *connection, cwd=tmp_path
    )
    assert contradiction.returncode == 1 and "contradict" in contradiction.stderr
    refused = admin("keys", "update", key_id, "--tokens-per-minute", "5", *connection, cwd=tmp_path)
    assert refused.returncode == 1 and "limits.tokens_per_minute" in refused.stderr

    revoked = admin("keys", "revoke", key_id, *connection, cwd=tmp_path)
    assert revoked.returncode == 0 and f"revoked {key_id}" in revoked.stdout
    assert listed_keys(gateway_process) == []
    assert "revoked" in admin("keys", "list", "--all", *connection, cwd=tmp_path).stdout
    groups = admin("groups", "list", *connection, cwd=tmp_path)
    assert "cs101" in groups.stdout
    deleted = admin("groups", "delete", "cs101", *connection, cwd=tmp_path)
    assert deleted.returncode == 0 and "deleted group cs101" in deleted.stdout


def test_a_roster_is_imported_to_a_private_file_all_or_nothing(
    gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    connection = ["--url", gateway_process.url, "--api-key", ADMIN_KEY]
    admin("groups", "set", "cs101", *connection, cwd=tmp_path)
    admin("groups", "set", "cs102", *connection, cwd=tmp_path)
    roster = tmp_path / "roster.csv"
    lines = ["owner,name,group"] + [f"student{i:03},cs101 key," for i in range(200)]
    roster.write_text("\n".join([*lines, "teacher,staff,cs102", ""]))
    out = tmp_path / "keys.csv"

    imported = admin(
        "keys",
        "import",
        str(roster),
        "--group",
        "cs101",
        "--out",
        str(out),
        "--requests-per-minute",
        "10",
        *connection,
        cwd=tmp_path,
    )
    assert imported.returncode == 0, imported.stderr
    assert "issued 201 keys" in imported.stdout and "mvk_" not in imported.stdout + imported.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    written = [line.split(",") for line in out.read_text().splitlines()]
    assert written[0] == ["owner", "name", "group", "key"] and len(written) == 202
    assert written[1][:3] == ["student000", "cs101 key", "cs101"]
    assert written[-1][:3] == ["teacher", "staff", "cs102"]
    keys = listed_keys(gateway_process, limit="5000")
    assert len(keys) == 201 and {k["prefix"] for k in keys} == {w[3][:8] for w in written[1:]}
    assert all(k["limits"] == {"requests_per_minute": 10} for k in keys)

    # The keys file is never written over.
    again = admin("keys", "import", str(roster), "--out", str(out), *connection, cwd=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr
    assert len(out.read_text().splitlines()) == 202

    # Rows the admin API refuses (an owner's key of that name exists): reported by line,
    # nothing created, no keys file left behind.
    clash = tmp_path / "clash.csv"
    clash.write_text("owner,name\nnewcomer,cs101\nstudent007,cs101 key\n")
    refused = admin("keys", "import", str(clash), "--group", "cs101", *connection, cwd=tmp_path)
    assert refused.returncode == 1 and "line 3:" in refused.stderr, refused.stderr
    assert not (tmp_path / "clash.keys.csv").exists()
    assert len(listed_keys(gateway_process, limit="5000")) == 201

    # --print-keys: on the terminal as asked (and in the file).
    one = tmp_path / "one.csv"
    one.write_text("owner,name\nlate,cs101\n")
    printed = admin("keys", "import", str(one), "--print-keys", *connection, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines()[1].startswith("late,cs101,,mvk_")
    assert (tmp_path / "one.keys.csv").read_text().splitlines()[1] == printed.stdout.splitlines()[1]


def test_a_bad_roster_creates_nothing(gateway_process: GatewayProcess, tmp_path: Path) -> None:
    connection = ["--url", gateway_process.url, "--api-key", ADMIN_KEY]
    roster = tmp_path / "roster.csv"
    roster.write_text("owner,name\nalice,a\n,b\nbob,c\nalice,a\n")
    refused = admin("keys", "import", str(roster), *connection, cwd=tmp_path)
    assert refused.returncode == 1
    assert "line 3: owner is empty" in refused.stderr
    assert "line 5: duplicate of line 2" in refused.stderr
    assert listed_keys(gateway_process) == [] and not (tmp_path / "roster.keys.csv").exists()
    unknown_group = tmp_path / "group.csv"
    unknown_group.write_text("owner,name,group\nalice,a,nosuch\n")
    refused = admin("keys", "import", str(unknown_group), *connection, cwd=tmp_path)
    assert refused.returncode == 1 and "line 2:" in refused.stderr and "nosuch" in refused.stderr
    assert json.loads(admin("keys", "list", "--json", *connection, cwd=tmp_path).stdout) == []
