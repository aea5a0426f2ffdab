"""Alembic environment: online migrations through the project's own engine.

The URL is the one given to `alembic_config()` (gateway-admin), or else
DATABASE_URL from the settings, so `alembic upgrade head` works too.
"""

from __future__ import annotations

from alembic import context

from shared.db import create_db_engine
from shared.models import Base

config = context.config


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from shared.settings import load_settings

    return load_settings().database_url


def run_migrations_online() -> None:
    engine = create_db_engine(_database_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=True,  # SQLite can only ALTER through table copies.
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them online")
run_migrations_online()
