"""`healthd`: the health-checker daemon's entry point.

For now it validates settings and schema, then waits for SIGTERM; the probe
loop itself arrives with its own issue (#4). It is already a separate process
with its own log file, so deployment and `make run` treat it as the real thing.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from shared.db import Database, SchemaMismatch, ensure_schema_current
from shared.logging import Redactor, configure_logging, get_logger
from shared.settings import SettingsError, load_settings

log = get_logger("health_checker")


async def run_until_stopped() -> None:
    """Idle until SIGTERM or SIGINT, then return so the process exits 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("healthd started (placeholder: probing arrives with issue #4)")
    await stop.wait()
    log.info("healthd stopped")


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.stderr.write(f"healthd: {error}\n")
        raise SystemExit(2) from None
    configure_logging(
        process="healthd",
        level=settings.log_level,
        log_dir=settings.log_dir,
        default_component="health_checker",
        redactor=Redactor([settings.admin_api_key.get_secret_value()]),
    )
    database = Database.connect(settings.database_url)
    try:
        ensure_schema_current(database.engine)
    except SchemaMismatch as error:
        sys.stderr.write(f"healthd: {error}\n")
        raise SystemExit(2) from None
    try:
        asyncio.run(run_until_stopped())
    finally:
        database.dispose()


if __name__ == "__main__":
    main()
