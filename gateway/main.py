"""`gateway`: check settings and schema, then serve the app under uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from gateway.app import redactor_for
from shared.db import Database, SchemaMismatch, ensure_schema_current
from shared.logging import configure_logging
from shared.settings import SettingsError, load_settings


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.stderr.write(f"gateway: {error}\n")
        raise SystemExit(2) from None
    configure_logging(
        process="gateway",
        level=settings.log_level,
        log_dir=settings.log_dir,
        default_component="api",
        redactor=redactor_for(settings),
    )
    database = Database.connect(settings.database_url)
    try:
        ensure_schema_current(database.engine)
    except SchemaMismatch as error:
        sys.stderr.write(f"gateway: {error}\n")
        raise SystemExit(2) from None
    finally:
        database.dispose()
    uvicorn.run(
        "gateway.app:create_app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
