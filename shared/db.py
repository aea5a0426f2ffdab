"""Database set-up shared by gateway, healthd and gateway-admin.

Two engines: SQLite (the default, one machine) and PostgreSQL through psycopg 3
(`postgresql+psycopg://`, several machines). What differs between them is
decided here, typed: upserts (`upsert`), how long a write waits for a lock
(SQLite's busy timeout, PostgreSQL's `lock_timeout`) and which errors mean
"busy" or "full" (`database_failure`, by SQLite's result code or PostgreSQL's
SQLSTATE, never by message text).

SQLite is the default: every connection gets WAL (readers never block the
writer), a busy timeout (a writer waits instead of failing with "database is
locked") and foreign keys. Write transactions start with BEGIN IMMEDIATE, so
two processes never deadlock upgrading a read lock to a write lock.

SQLite keeps writing to a file that was deleted under it, and a new file put
at the path is another database: `DatabaseFile` remembers which file was
opened, and every write checks that the path still names it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.errors import DatabaseProblem, DatabaseUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
BUSY_TIMEOUT_MS = 5000
UPGRADE_COMMAND = "gateway-admin db upgrade"
# Less free space than this on the database's filesystem counts as a full disk for
# /health (a write needs a few pages of WAL; an update of the registry many more).
MIN_FREE_BYTES = 1024 * 1024


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def is_postgresql(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


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
    busy_ms = int(options.get("lock_wait_ms", BUSY_TIMEOUT_MS))
    connection.exec_driver_sql(f"PRAGMA busy_timeout={busy_ms}")
    connection.exec_driver_sql(f"BEGIN {options.get('sqlite_begin', 'DEFERRED')}")


def _on_postgresql_begin(connection: Any) -> None:
    # A shorter wait for a lock than the connection's lock_timeout, for this
    # transaction only (SET LOCAL ends with it).
    busy_ms = connection.get_execution_options().get("lock_wait_ms")
    if busy_ms is not None:
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = {int(busy_ms)}")


def create_db_engine(url: str) -> Engine:
    """An engine with the project's connection settings applied."""
    if is_postgresql(url):
        # A write waits for a row lock at most BUSY_TIMEOUT_MS, then fails with
        # lock_not_available ("busy"), as SQLite's busy timeout does.
        engine = create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"options": f"-c lock_timeout={BUSY_TIMEOUT_MS}", "connect_timeout": 5},
        )
        event.listen(engine, "begin", _on_postgresql_begin)
        return engine
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


class DatabaseFileGone(SQLAlchemyError):
    """The path no longer names the SQLite file this process opened. A SQLAlchemyError,
    so the writers that retry a failing database treat it as one; `database_failure`
    types it for the API."""


class DatabaseFile:
    """The SQLite file behind a Database, identified by (device, inode) when first
    opened. While SQLite holds it open its inode cannot be reused, so another pair at
    the path, or none, means it was replaced or deleted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened: tuple[int, int] | None = None

    def note_opened(self) -> None:
        """On each new connection: the first one fixes which file is ours."""
        if self.opened is None:
            with contextlib.suppress(FileNotFoundError):
                found = os.stat(self.path)
                self.opened = (found.st_dev, found.st_ino)

    def open_existing(
        self, _dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> None:
        """Once the file is ours, a new connection opens it read-write but never creates
        it: SQLite's default would make an empty file at the path of one deleted under us
        (between a check and the connection, or on a pool's fresh connection), and that
        file would pass for ours were its inode number reused."""
        if self.opened is not None:
            cargs[:] = [f"file:{urllib.parse.quote(str(self.path))}?mode=rw"]
            cparams["uri"] = True

    def problem(self) -> str | None:
        """What happened to the file opened, in words (for the log), or None."""
        if self.opened is None:
            return None
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return f"the database file {self.path} was deleted while in use"
        if (found.st_dev, found.st_ino) != self.opened:
            return f"the database file {self.path} was replaced by another file while in use"
        return None

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path.parent).free


def sqlite_file(url: str) -> DatabaseFile | None:
    """The file of a SQLite URL (None for another engine, memory or a `file:` URI)."""
    if not is_sqlite(url):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return DatabaseFile(Path(database).expanduser().resolve())


@dataclass(frozen=True)
class Database:
    """An engine plus the two kinds of session the code uses."""

    engine: Engine
    sessions: sessionmaker[Session]
    file: DatabaseFile | None = None

    @classmethod
    def connect(cls, url: str) -> Database:
        engine = create_db_engine(url)
        file = sqlite_file(url)
        if file is not None:
            event.listen(engine, "do_connect", file.open_existing)
            event.listen(engine, "connect", lambda *_: file.note_opened())
        return cls(engine, sessionmaker(engine, expire_on_commit=False), file)

    def check_file(self) -> None:
        """Raise DatabaseFileGone when the path no longer names the file opened."""
        problem = self.file.problem() if self.file is not None else None
        if problem is not None:
            raise DatabaseFileGone(problem)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads; it never takes the write lock."""
        with self.sessions() as session:
            yield session

    @contextmanager
    def writing(
        self, *, durable: bool = False, busy_timeout_ms: int | None = None
    ) -> Iterator[Session]:
        """A session that commits on success and rolls back on error.

        `durable`: the commit is on disk before it returns (synchronous=FULL), as
        registrations must be; in WAL mode NORMAL may lose the last commits on a
        power loss (never corrupting the file), which is fine for usage and history.
        A write that cannot get the lock within the busy timeout raises
        OperationalError (`is_busy`) before anything was written (`busy_timeout_ms`:
        a shorter wait than BUSY_TIMEOUT_MS); one to a file deleted or replaced under
        us raises DatabaseFileGone before it starts."""
        self.check_file()
        options: dict[str, object] = {"sqlite_begin": "IMMEDIATE", "sqlite_durable": durable}
        if busy_timeout_ms is not None:
            options["lock_wait_ms"] = busy_timeout_ms
        with self.sessions() as session:
            session.connection(execution_options=options)
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


# PostgreSQL's SQLSTATEs (psycopg's `sqlstate`) of a write that did not get its
# locks: lock_not_available (lock_timeout), serialization_failure, deadlock_detected.
PG_BUSY_STATES = frozenset({"55P03", "40001", "40P01"})
PG_DISK_FULL = "53100"


def _sqlstate(error: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of a database error, or None when it is not PostgreSQL's."""
    state = getattr(getattr(error, "orig", None), "sqlstate", None)
    return state if isinstance(state, str) else None


def _primary_code(error: BaseException) -> int | None:
    """SQLite's primary result code of a database error (extended codes carry it in
    their low byte), or None when it is not SQLite's."""
    code = getattr(getattr(error, "orig", None), "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_busy(error: BaseException) -> bool:
    """Whether a database error says the lock was not had: SQLite's "busy" or
    "locked", PostgreSQL's lock timeout, serialization failure or deadlock."""
    if _sqlstate(error) in PG_BUSY_STATES:
        return True
    return _primary_code(error) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def database_failure(error: BaseException) -> DatabaseUnavailable | None:
    """The typed failure of a database error that is the database's own state (busy,
    disk full, file gone), not a bug; None for any other error."""
    if isinstance(error, DatabaseFileGone):
        return DatabaseUnavailable(DatabaseProblem.FILE_GONE)
    if is_busy(error):
        return DatabaseUnavailable(DatabaseProblem.BUSY)
    if _primary_code(error) == sqlite3.SQLITE_FULL or _sqlstate(error) == PG_DISK_FULL:
        return DatabaseUnavailable(DatabaseProblem.FULL)
    return None


def upsert(session: Session, model: type[Any]) -> Any:
    """An INSERT of `model` in the session's dialect, with its `on_conflict_do_nothing`
    and `on_conflict_do_update` (SQLite and PostgreSQL spell them alike)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql_insert(model)
    return sqlite_insert(model)


def check_writable(database: Database, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
    """Take the write lock (waiting at most `busy_timeout_ms`), write a row as it is and
    roll back: raises when the lock cannot be had or the file cannot be written."""
    with database.sessions() as session:
        session.connection(
            execution_options={
                "sqlite_begin": "IMMEDIATE",
                "lock_wait_ms": busy_timeout_ms,
            }
        )
        session.execute(text("UPDATE registry_generation SET value = value"))
        session.rollback()


def write_problem(database: Database, *, busy_timeout_ms: int) -> DatabaseProblem | None:
    """Why a write could not happen now (file gone, disk full, lock held), or None;
    other errors are raised. The lock test writes nothing, so a full disk is told
    from the free space of the database's filesystem."""
    if database.file is not None:
        if database.file.problem() is not None:
            return DatabaseProblem.FILE_GONE
        if database.file.free_bytes() < MIN_FREE_BYTES:
            return DatabaseProblem.FULL
    try:
        check_writable(database, busy_timeout_ms=busy_timeout_ms)
    except SQLAlchemyError as error:
        typed = database_failure(error)
        if typed is None:
            raise
        return typed.problem
    return None


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
