"""`gateway-admin db copy`: a populated SQLite file into PostgreSQL, every row equal."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from shared.cluster.copy import data_tables
from shared.db import Database, upgrade_to_head
from shared.models import (
    BackendUsage,
    CheckRequest,
    ClientGroup,
    ClientKey,
    HealthCheck,
    HealthdHeartbeat,
    KeyUsageMinute,
    ModelClaim,
    ModelServer,
    NotifyOutbox,
    RegistryGeneration,
    ResponseOwner,
    UsageMinute,
    utcnow,
)
from tests.databases import PostgresServer
from tests.support import clean_environment

NOW = utcnow()


def populate(url: str, servers: int = 30) -> None:
    """Rows in every table, with the awkward values: JSON, floats, NULLs, unicode, times."""
    database = Database.connect(url)
    with database.writing() as session:
        session.add(ClientGroup(name="class-a", limits={"requests_per_minute": 60}, models=None))
        session.flush()
        for n in range(servers):
            server = ModelServer(
                id=f"server-{n:03}",
                model_name=None if n % 3 else f"modèle/{n}",
                endpoint_url=f"http://10.0.0.{n}:8000",
                api_key=None if n % 2 else f"key-{n}",
                tags=["gpu", "vision"] if n % 2 else [],
                reported_models=[f"m{n}", "ünï"],
                model_details={f"m{n}": {"max_model_len": 4096 + n, "owned_by": "vllm"}},
                health_status="healthy" if n % 4 else "unhealthy",
                status_changed_at=NOW - timedelta(minutes=n),
                success_rate=100 / (n + 3),
                is_active=n != 7,
                draining=n == 5,
                student_id=f"student-{n % 4}",
                description='a "quoted" laptop\nwith a newline' if n == 1 else None,
            )
            session.add(server)
            session.flush()
            for k in range(5):
                session.add(
                    HealthCheck(
                        server_id=server.id,
                        checked_at=NOW - timedelta(seconds=10 * k, microseconds=n),
                        status="success" if k % 2 else "failure",
                        response_time_ms=1.5 * k if k else None,
                        http_status=200,
                        error_message=None if k else "connection refused",
                    )
                )
            session.add(
                BackendUsage(server_id=server.id, requests_total=n, latency_ms_total=0.1 * n)
            )
            session.add(ResponseOwner(response_id=f"resp_{n}", server_id=server.id))
            session.add(
                UsageMinute(
                    minute=29_000_000 + n,
                    server_id=server.id,
                    model=f"m{n}",
                    requests=n,
                    latency_counts=[n, 0, 1],
                    first_token_counts=[],
                )
            )
            session.add(CheckRequest(server_id=server.id, requested_at=NOW))
        key = ClientKey(
            name="alice's key",
            owner="alice",
            group_name="class-a",
            key_hash="a" * 64,
            prefix="sk-abc",
            limits={"tokens_per_day": 1000},
            models=["m1"],
            expires_at=NOW + timedelta(days=30),
        )
        session.add(key)
        session.flush()
        session.add(
            KeyUsageMinute(minute=29_000_000, key_id=key.id, model="m1", latency_counts=[1])
        )
        session.add(HealthdHeartbeat(id=1, beat_at=NOW, pid=42, instance="h:42", role="active"))
        session.add(
            ModelClaim(
                model_name="modèle/0",
                owner_id="server-000",
                owner_label="student-0",
                co_hosts=["server-001"],
            )
        )
        session.add(NotifyOutbox(server_id="server-000", event="drained", reason="by the admin"))
    database.dispose()


def everything(url: str) -> dict[str, list[dict[str, object]]]:
    database = Database.connect(url)
    with database.engine.connect() as connection:
        found = {
            table.name: [
                dict(row._mapping)
                for row in connection.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in data_tables()
        }
    database.dispose()
    return found


def copy(source: str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.admin", "db", "copy", "--to", target],
        env=clean_environment({"DATABASE_URL": source}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_populated_sqlite_file_copies_into_postgresql_row_for_row(
    tmp_path: Path, postgres_url: str
) -> None:
    source = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade_to_head(source)
    populate(source)

    done = copy(source, postgres_url)

    assert done.returncode == 0, done.stderr
    before, after = everything(source), everything(postgres_url)
    assert set(before) == {table.name for table in data_tables()}
    assert all(before[name] for name in before), "every table has rows to copy"
    assert after == before
    assert f"copied and verified {sum(map(len, before.values()))} rows" in done.stdout
    # The copy goes on living: ids continue past the copied ones, the registry's
    # generation is past the source's, and a change there still bumps it.
    target = Database.connect(postgres_url)
    with target.writing() as session:
        check = HealthCheck(server_id="server-001", checked_at=utcnow(), status="success")
        session.add(check)
        session.flush()
        assert check.id == max(row["id"] for row in before["health_checks"]) + 1  # type: ignore[type-var]
    with target.reading() as session:
        generation = session.scalar(select(RegistryGeneration.value))
    with target.writing() as session:
        session.get(ModelServer, "server-002").health_status = "unhealthy"  # type: ignore[union-attr]
    with target.reading() as session:
        assert session.scalar(select(RegistryGeneration.value)) == (generation or 0) + 1
        assert session.scalar(select(func.count()).select_from(ModelServer)) == 30
    target.dispose()


def test_a_target_that_holds_data_is_refused_and_left_as_it_was(
    tmp_path: Path, postgres_url: str
) -> None:
    source = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade_to_head(source)
    populate(source, servers=3)
    populate(postgres_url, servers=1)

    done = copy(source, postgres_url)

    assert done.returncode == 1
    assert "already holds data" in done.stderr
    assert len(everything(postgres_url)["model_servers"]) == 1


def test_db_upgrade_and_current_on_an_empty_postgresql_database(
    postgres_server: PostgresServer,
) -> None:
    name = postgres_server.create()  # empty: no schema at all
    url = postgres_server.url(name)
    try:

        def admin(*arguments: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "gateway.cli.admin", "db", *arguments],
                env=clean_environment({"DATABASE_URL": url}),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        assert admin("current").returncode == 1
        upgraded = admin("upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        assert "(head)" in upgraded.stdout
        current = admin("current")
        assert current.returncode == 0 and "up to date" in current.stdout
    finally:
        postgres_server.drop(name)
