"""Database set-up shared by gateway, healthd and gateway-admin.

SQLite is the default: every connection gets WAL (readers never block the
writer), a busy timeout (a writer waits instead of failing with "database is
locked") and foreign keys. Write transactions start with BEGIN IMMEDIATE, so
two processes never deadlock upgrading a read lock to a write lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
BUSY_TIMEOUT_MS = 5000
UPGRADE_COMMAND = "gateway-admin db upgrade"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _prepare_sqlite_file(url: str) -> None:
    """Create the folder that will hold the database file, if it is missing."""
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _on_sqlite_begin(connection: Any) -> None:
    options = connection.get_execution_options()
    # A connection's synchronous mode is set per transaction: FULL for the writes
    # that must survive a power loss (registrations), NORMAL for the rest. So is
    # how long it waits for the lock (short for a health check, BUSY_TIMEOUT_MS else).
    synchronous = "FULL" if options.get("sqlite_durable") else "NORMAL"
    connection.exec_driver_sql(f"PRAGMA synchronous={synchronous}")
    busy_ms = int(options.get("sqlite_busy_timeout_ms", BUSY_TIMEOUT_MS))
    connection.exec_driver_sql(f"PRAGMA busy_timeout={busy_ms}")
    connection.exec_driver_sql(f"BEGIN {options.get('sqlite_begin', 'DEFERRED')}")


def create_db_engine(url: str) -> Engine:
    """An engine with the project's connection settings applied."""
    if not is_sqlite(url):
        return create_engine(url, pool_pre_ping=True)
    _prepare_sqlite_file(url)
    engine = create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


@dataclass(frozen=True)
class Database:
    """An engine plus the two kinds of session the code uses."""

    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def connect(cls, url: str) -> Database:
        engine = create_db_engine(url)
        return cls(engine, sessionmaker(engine, expire_on_commit=False))

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads; it never takes the write lock."""
        with self.sessions() as session:
            yield session

    @contextmanager
    def writing(self, *, durable: bool = False) -> Iterator[Session]:
        """A session that commits on success and rolls back on error.

        `durable`: the commit is on disk before it returns (synchronous=FULL), as
        registrations must be; in WAL mode NORMAL may lose the last commits on a
        power loss (never corrupting the file), which is fine for usage and history.
        A write that cannot get the lock within the busy timeout raises
        OperationalError (`is_busy`) before anything was written."""
        with self.sessions() as session:
            session.connection(
                execution_options={"sqlite_begin": "IMMEDIATE", "sqlite_durable": durable}
            )
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def is_busy(error: BaseException) -> bool:
    """Whether a database error is SQLite's "busy" or "locked" (the lock was not had)."""
    original = getattr(error, "orig", None)
    code = getattr(original, "sqlite_errorcode", None)
    return (
        isinstance(original, sqlite3.OperationalError)
        and code is not None
        and (code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))
    )


def check_writable(database: Database, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
    """Take the write lock (waiting at most `busy_timeout_ms`), write a row as it is and
    roll back: raises when the lock cannot be had or the file cannot be written."""
    with database.sessions() as session:
        session.connection(
            execution_options={
                "sqlite_begin": "IMMEDIATE",
                "sqlite_busy_timeout_ms": busy_timeout_ms,
            }
        )
        session.execute(text("UPDATE registry_generation SET value = value"))
        session.rollback()


# --- Alembic -------------------------------------------------------------


def alembic_config(url: str) -> Config:
    """Alembic's configuration for `url`, independent of the working folder."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(url: str) -> None:
    """Apply every pending migration (what `gateway-admin db upgrade` does)."""
    from alembic import command

    _prepare_sqlite_file(url)
    command.upgrade(alembic_config(url), "head")


@dataclass(frozen=True)
class SchemaState:
    current: str | None
    head: str | None
    known: frozenset[str]

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def schema_state(engine: Engine) -> SchemaState:
    """Which revision the database is at, and which one the code expects."""
    script = ScriptDirectory.from_config(alembic_config(str(engine.url)))
    known = frozenset(revision.revision for revision in script.walk_revisions())
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return SchemaState(current=current, head=script.get_current_head(), known=known)


class SchemaMismatch(Exception):
    """The database is not at the revision this code was written for."""


def ensure_schema_current(engine: Engine) -> None:
    """Refuse to run on an un-migrated, older or newer schema, naming the fix."""
    state = schema_state(engine)
    if state.up_to_date:
        return
    if state.current is None:
        raise SchemaMismatch(f"the database has no schema yet; run `{UPGRADE_COMMAND}` first")
    if state.current not in state.known:
        raise SchemaMismatch(
            f"the database is at revision {state.current}, newer than this code knows "
            f"(head {state.head}); upgrade the code, or restore a matching backup"
        )
    raise SchemaMismatch(
        f"the database is at revision {state.current}, the code expects {state.head}; "
        f"run `{UPGRADE_COMMAND}`"
    )
