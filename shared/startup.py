"""What every process does first: settings, logging, and a database at the right schema.

Any problem is one line on stderr and exit code 2, before anything runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy.exc import SQLAlchemyError

from shared.db import Database, SchemaMismatch, check_writable, ensure_schema_current
from shared.logging import Redactor, configure_logging
from shared.settings import Settings, SettingsError, load_settings
from shared.urls import url_password


@dataclass(frozen=True)
class Process:
    settings: Settings
    database: Database
    redactor: Redactor


def redactor_for(settings: Settings) -> Redactor:
    """A redactor that knows this deployment's own keys."""
    return Redactor(
        [settings.admin_api_key.get_secret_value(), settings.metrics_api_key.get_secret_value()]
        + [key.get_secret_value() for key in settings.client_api_keys]
        + [key.get_secret_value() for key in settings.registration_keys]
        + [url_password(settings.database_url) or "", url_password(settings.redis_url) or ""]
    )


def refuse(program: str, problem: object) -> NoReturn:
    sys.stderr.write(f"{program}: {problem}\n")
    raise SystemExit(2)


def start_process(program: str, *, default_component: str) -> Process:
    """Load settings, configure logging to LOG_DIR/<program>.log, open the database."""
    try:
        settings = load_settings()
    except SettingsError as error:
        refuse(program, error)
    redactor = redactor_for(settings)
    configure_logging(
        process=program,
        level=settings.log_level,
        log_dir=settings.log_dir,
        default_component=default_component,
        redactor=redactor,
    )
    try:
        database = Database.connect(settings.database_url)
    except ModuleNotFoundError as error:
        refuse(
            program,
            f"DATABASE_URL names PostgreSQL, whose driver ({error.name}) is not installed: "
            "pip install 'multiverse-gateway[cluster]'",
        )
    try:
        ensure_schema_current(database.engine)
        check_writable(database)
    except SchemaMismatch as error:
        database.dispose()
        refuse(program, error)
    except SQLAlchemyError as error:
        database.dispose()
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        if database.engine.dialect.name == "postgresql":
            refuse(
                program,
                f"cannot reach the database ({reason}); check DATABASE_URL's host, port, "
                "user and database, and that PostgreSQL accepts this machine",
            )
        refuse(
            program,
            f"cannot use the database ({reason}); check that the file and its folder "
            "exist and are writable by this user",
        )
    return Process(settings, database, redactor)
