"""`gateway-admin db`: the schema (Alembic migrations) and copying a database, on
DATABASE_URL directly (not through the admin API)."""

from __future__ import annotations

import sys

import click
from sqlalchemy.exc import SQLAlchemyError

from gateway.cli.api_client import fail
from shared.settings import SettingsError, load_settings


@click.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


def _database_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        return load_settings().database_url
    except SettingsError as error:
        fail(str(error))
        raise AssertionError from error


@db.command("upgrade")
@click.option("--database-url", help="Defaults to DATABASE_URL (environment or .env).")
def db_upgrade(database_url: str | None) -> None:
    """Apply every pending migration."""
    from shared.db import Database, schema_state, upgrade_to_head

    url = _database_url(database_url)
    upgrade_to_head(url)
    database = Database.connect(url)
    click.echo(f"database is at revision {schema_state(database.engine).current} (head)")
    database.dispose()


@db.command("current")
@click.option("--database-url", help="Defaults to DATABASE_URL (environment or .env).")
def db_current(database_url: str | None) -> None:
    """Show the schema revision of the database and the one the code expects."""
    from shared.db import Database, schema_state

    database = Database.connect(_database_url(database_url))
    state = schema_state(database.engine)
    database.dispose()
    verdict = "up to date" if state.up_to_date else "run `gateway-admin db upgrade`"
    click.echo(f"current: {state.current or 'none'}  head: {state.head}  ({verdict})")
    if not state.up_to_date:
        sys.exit(1)


@db.command("copy")
@click.option("--to", "target", required=True, help="The new, empty database's URL.")
@click.option("--database-url", help="The source; defaults to DATABASE_URL.")
def db_copy(target: str, database_url: str | None) -> None:
    """Copy every row to a new database (SQLite to PostgreSQL), verified row for row.

    Stop the gateway and healthd first (or copy from a backup): rows written
    meanwhile would not be copied."""
    from shared.cluster.copy import CopyRefused, copy_database
    from shared.settings import normalize_database_url

    try:
        report = copy_database(_database_url(database_url), normalize_database_url(target))
    except (CopyRefused, ValueError) as error:
        fail(str(error))
        return
    except SQLAlchemyError as error:
        fail(f"cannot copy: {getattr(error, 'orig', None) or error}")
        return
    for table, rows in report.rows.items():
        click.echo(f"{table:24} {rows:>10} rows")
    click.echo(f"copied and verified {report.total} rows in {len(report.rows)} tables")
