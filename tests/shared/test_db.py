"""Database set-up: migrations from empty, connection pragmas, schema checks at start."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

from shared.db import (
    Database,
    SchemaMismatch,
    check_writable,
    database_failure,
    ensure_schema_current,
    upgrade_to_head,
    write_problem,
)
from shared.errors import DatabaseProblem
from shared.models import ModelServer, utcnow
from tests.databases import write_lock_held
from tests.support import BIN, clean_environment


def test_migrating_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'folder' / 'fresh.db'}"
    upgrade_to_head(url)
    database = Database.connect(url)
    tables = set(inspect(database.engine).get_table_names())
    assert {"model_servers", "health_checks", "alembic_version"} <= tables
    columns = {c["name"] for c in inspect(database.engine).get_columns("model_servers")}
    assert {
        "tags",
        "priority",
        "weight",
        "max_concurrent",
        "status_changed_at",
        "reported_models",
        "is_active",
    } <= columns
    ensure_schema_current(database.engine)
    upgrade_to_head(url)  # running it again changes nothing
    ensure_schema_current(database.engine)
    database.dispose()


def test_a_deleted_file_is_never_made_again_by_a_new_connection(tmp_path: Path) -> None:
    """Once the file was opened, a fresh connection (the pool's, a poll's after a check)
    opens it without creating it: an empty file at the path would hide the deletion
    (its inode number can be the old one's) and fail later as 'no such table'."""
    path = tmp_path / "gone.db"
    upgrade_to_head(f"sqlite:///{path}")
    database = Database.connect(f"sqlite:///{path}")
    with database.reading() as session:
        assert session.execute(text("SELECT count(*) FROM model_servers")).scalar() == 0
    database.engine.dispose()  # nothing holds the file now: its inode may be reused
    for name in ("gone.db", "gone.db-wal", "gone.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(SQLAlchemyError, match="unable to open"), database.reading() as session:
        session.execute(text("SELECT count(*) FROM model_servers"))
    assert not path.exists()
    database.dispose()


@pytest.mark.sqlite_only("SQLite's pragmas")
def test_every_connection_gets_wal_busy_timeout_and_foreign_keys(database: Database) -> None:
    with database.reading() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA busy_timeout")).scalar() == 5000
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_foreign_keys_are_enforced(database: Database) -> None:
    with pytest.raises(Exception, match=r"(?i)FOREIGN KEY"), database.writing() as session:
        session.execute(
            text(
                "INSERT INTO health_checks (server_id, checked_at, status) "
                "VALUES ('missing', '2026-01-01', 'success')"
            )
        )


def test_writes_roll_back_on_error(database: Database) -> None:
    with pytest.raises(RuntimeError), database.writing() as session:
        now = utcnow()
        session.add(
            ModelServer(
                model_name="m",
                endpoint_url="http://x",
                registered_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
        raise RuntimeError("abort")
    with database.reading() as session:
        assert session.query(ModelServer).count() == 0


def test_times_come_back_aware_utc(database: Database) -> None:
    now = utcnow()
    with database.writing() as session:
        server = ModelServer(
            model_name="m",
            endpoint_url="http://x",
            registered_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(server)
    with database.reading() as session:
        stored = session.get(ModelServer, server.id)
        assert stored is not None and stored.registered_at == now
        assert stored.registered_at.utcoffset() is not None


def test_unmigrated_and_newer_schemas_are_refused(tmp_path: Path, database_url: str) -> None:
    empty = Database.connect(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SchemaMismatch, match="gateway-admin db upgrade"):
        ensure_schema_current(empty.engine)
    empty.dispose()

    newer = Database.connect(database_url)
    with newer.writing() as session:
        session.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    with pytest.raises(SchemaMismatch, match="newer than this code"):
        ensure_schema_current(newer.engine)
    newer.dispose()


@pytest.mark.parametrize("program", ["gateway", "healthd"])
def test_processes_refuse_an_unmigrated_database(tmp_path: Path, program: str) -> None:
    result = subprocess.run(
        [str(BIN / program)],
        cwd=tmp_path,
        env=clean_environment(
            {"DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}", "LOG_DIR": str(tmp_path)}
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "gateway-admin db upgrade" in result.stderr.strip().splitlines()[-1]


def _busy(database: Database, path: Path) -> None:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        check_writable(database, busy_timeout_ms=50)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _full(database: Database, path: Path) -> None:
    """SQLite's own SQLITE_FULL (the code a full disk gives): no page may be added."""
    with database.writing() as session:
        session.execute(text("CREATE TABLE filler (b BLOB)"))
    with database.writing() as session:
        pages = session.execute(text("PRAGMA page_count")).scalar()
        session.execute(text(f"PRAGMA max_page_count = {pages}"))
        session.execute(text("INSERT INTO filler VALUES (zeroblob(1000000))"))


def _gone(database: Database, path: Path) -> None:
    path.unlink()
    with database.writing() as session:
        session.execute(text("UPDATE registry_generation SET value = value + 1"))


def _replaced(database: Database, path: Path) -> None:
    path.rename(path.with_suffix(".old"))
    sqlite3.connect(path).close()
    with database.writing():
        pass


def _constraint(database: Database, path: Path) -> None:
    with database.writing() as session:
        session.execute(text("INSERT INTO registry_generation (id, value) VALUES (1, 0)"))


@pytest.mark.parametrize(
    ("failing", "problem"),
    [
        (_busy, DatabaseProblem.BUSY),
        (_full, DatabaseProblem.FULL),
        (_gone, DatabaseProblem.FILE_GONE),
        (_replaced, DatabaseProblem.FILE_GONE),
        (_constraint, None),
    ],
    ids=["busy", "full", "deleted", "replaced", "a bug's error"],
)
@pytest.mark.sqlite_only("SQLite's result codes and its file (PostgreSQL: the test below)")
def test_database_failures_are_typed_by_code_not_message(
    database: Database,
    database_url: str,
    failing: Callable[[Database, Path], None],
    problem: DatabaseProblem | None,
) -> None:
    path = Path(database_url.removeprefix("sqlite:///"))
    with database.reading() as session:
        session.execute(text("SELECT 1"))  # the file this Database opened
    with pytest.raises(SQLAlchemyError) as raised:
        failing(database, path)
    typed = database_failure(raised.value)
    assert (typed and typed.problem) == problem
    if typed is not None:
        assert typed.status_code == 503 and typed.message == problem


def test_postgresql_failures_are_typed_by_sqlstate(postgres_url: str) -> None:
    """A write that cannot get its lock within the wait is "busy" (lock_not_available,
    55P03), answered 503 with Retry-After; a bug's error (a broken constraint) is not
    the database's state."""
    database = Database.connect(postgres_url)
    try:
        with write_lock_held(postgres_url), pytest.raises(SQLAlchemyError) as raised:
            check_writable(database, busy_timeout_ms=50)
        typed = database_failure(raised.value)
        assert typed is not None and typed.problem is DatabaseProblem.BUSY
        assert typed.status_code == 503 and typed.headers == {"Retry-After": "5"}
        assert write_problem(database, busy_timeout_ms=50) is None  # the lock is free again
        with pytest.raises(SQLAlchemyError) as raised:
            _constraint(database, Path("unused"))
        assert database_failure(raised.value) is None
    finally:
        database.dispose()
