"""The database engines the suite runs on: SQLite files, and PostgreSQL databases.

`TEST_DATABASE=postgresql` runs the whole suite on PostgreSQL
(`TEST_POSTGRES_URL`, default the local server): the schema is migrated once per
run into a template database, and each test gets a fresh copy of it
(`CREATE DATABASE ... TEMPLATE`, a file copy on the server), dropped after the
test. Tests of PostgreSQL or Redis themselves take `postgres_url` or
`redis_url` whatever the engine. Where the services are missing they are
skipped with the reason, except under CI (`CI=true`), where that is a failure.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from shared.cluster.copy import data_tables
from shared.db import upgrade_to_head
from shared.models import Base

ENGINES = ("sqlite", "postgresql")
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_names = itertools.count()


def test_engine() -> str:
    engine = os.environ.get("TEST_DATABASE", "sqlite").strip().lower() or "sqlite"
    if engine not in ENGINES:
        raise pytest.UsageError(f"TEST_DATABASE={engine!r}: use one of {', '.join(ENGINES)}")
    return engine


def services_required() -> bool:
    """Under CI the services must be there: a missing one fails instead of skipping."""
    return os.environ.get("CI", "").lower() == "true"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if reachable(host, port):
        return
    reason = f"{name} is not reachable at {host}:{port}"
    if services_required():
        pytest.fail(f"{reason}, and CI=true requires it", pytrace=False)
    pytest.skip(reason)


class PostgresServer:
    """Makes, cleans and drops the suite's databases on one PostgreSQL server.

    Making a database from the template and dropping it cost about 2 s on this
    machine (the server writes a checkpoint for each), so a test's database is
    emptied afterwards (its connections ended, every row deleted, counters and
    sequences back at the start) and handed to the next test: about 0.1 s. One
    whose schema a test changed is dropped instead. Commits are not waited for
    on disk (`synchronous_commit=off` for these databases only)."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url: URL = make_url(admin_url)
        host, port = self.admin_url.host or "127.0.0.1", self.admin_url.port or 5432
        require_service("PostgreSQL", host, port)
        self.engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.prefix = f"gwtest_{os.getpid()}_{next(_names)}"
        self.template = self.create()
        upgrade_to_head(self.url(self.template))
        self.head = self._revision(self.template)
        self.free: list[str] = []
        self.made: set[str] = set()

    def url(self, name: str) -> str:
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def create(self, template: str | None = None) -> str:
        name = f"{self.prefix}_{next(_names)}"
        with self.engine.connect() as connection:
            clause = f" TEMPLATE {template}" if template else ""
            connection.execute(text(f"CREATE DATABASE {name}{clause}"))
            connection.execute(text(f"ALTER DATABASE {name} SET synchronous_commit = off"))
        return name

    def drop(self, name: str) -> None:
        with self.engine.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    def _revision(self, name: str) -> str | None:
        engine = create_engine(self.url(name))
        try:
            with engine.connect() as connection:
                return connection.scalar(text("SELECT version_num FROM alembic_version"))
        finally:
            engine.dispose()

    def _empty(self, name: str) -> bool:
        """End the database's other connections and delete its rows; False when its
        schema is not the template's any more."""
        with self.engine.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        engine = create_engine(self.url(name), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                if connection.scalar(text("SELECT version_num FROM alembic_version")) != self.head:
                    return False
                connection.execute(text("BEGIN"))
                for table in reversed(data_tables()):
                    connection.execute(table.delete())
                connection.execute(text("COMMIT"))
                connection.execute(text("UPDATE registry_generation SET value = 0"))
                connection.execute(text("UPDATE keys_generation SET value = 0"))
                for table in data_tables():
                    column = table.autoincrement_column
                    if column is not None:
                        connection.execute(
                            text(
                                f"SELECT setval(pg_get_serial_sequence('{table.name}', "
                                f"'{column.name}'), 1, false)"
                            )
                        )
        except SQLAlchemyError:
            return False
        finally:
            engine.dispose()
        return True

    @contextmanager
    def fresh(self) -> Iterator[str]:
        """An empty, migrated database's URL for one test."""
        name = self.free.pop() if self.free else self.create(self.template)
        self.made.add(name)
        try:
            yield self.url(name)
        finally:
            if self._empty(name):
                self.free.append(name)
            else:
                self.made.discard(name)
                self.drop(name)

    def close(self) -> None:
        for name in [*self.made, self.template]:
            self.drop(name)
        self.engine.dispose()


def postgres_admin_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def redis_test_url() -> str:
    return os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)


def make_url_redis(url: str) -> tuple[str, int]:
    """The host and port of a redis:// URL."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


@contextmanager
def write_lock_held(database_url: str) -> Iterator[None]:
    """Another client holds the database's write lock (a backup, a long admin query):
    SQLite's BEGIN EXCLUSIVE on the file; on PostgreSQL every table of the schema locked
    IN EXCLUSIVE MODE (reads go on, writes wait). Released when the block ends."""
    if make_url(database_url).get_backend_name() == "sqlite":
        import sqlite3

        holder = sqlite3.connect(
            database_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
        )
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_engine(database_url)
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    try:
        with engine.connect() as connection:
            connection.execute(text(f"LOCK TABLE {tables} IN EXCLUSIVE MODE"))
            try:
                yield
            finally:
                connection.rollback()
    finally:
        engine.dispose()
