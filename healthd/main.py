"""`healthd`: the health-checker daemon's entry point.

Validates settings and schema, then probes every active backend until SIGTERM
or SIGINT, after which it writes the results in hand and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import httpx

from healthd.daemon import Daemon
from shared.db import Database, SchemaMismatch, ensure_schema_current
from shared.logging import Redactor, configure_logging
from shared.settings import Settings, SettingsError, load_settings


async def run_until_stopped(settings: Settings, database: Database, redactor: Redactor) -> None:
    """Probe until SIGTERM or SIGINT, then return so the process exits 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with httpx.AsyncClient(
        verify=settings.verify_backend_tls,
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
    ) as client:
        await Daemon(settings, database, client, redactor=redactor).run(stop)


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.stderr.write(f"healthd: {error}\n")
        raise SystemExit(2) from None
    redactor = Redactor([settings.admin_api_key.get_secret_value()])
    configure_logging(
        process="healthd",
        level=settings.log_level,
        log_dir=settings.log_dir,
        default_component="health_checker",
        redactor=redactor,
    )
    database = Database.connect(settings.database_url)
    try:
        ensure_schema_current(database.engine)
    except SchemaMismatch as error:
        sys.stderr.write(f"healthd: {error}\n")
        raise SystemExit(2) from None
    try:
        asyncio.run(run_until_stopped(settings, database, redactor))
    finally:
        database.dispose()


if __name__ == "__main__":
    main()
