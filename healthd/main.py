"""`healthd`: the health-checker daemon's entry point.

Validates settings and schema, then probes every active backend (on PostgreSQL
only while it is the elected one: healthd/roles.py) until SIGTERM or SIGINT,
after which it writes the results in hand and exits 0; exits 1 when
the database file is deleted or replaced under it.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from healthd import metrics
from healthd.daemon import Daemon
from healthd.roles import STANDBY_POLL_SECONDS, AnotherHealthd, run_elected, single_on_sqlite
from shared.db import Database, DatabaseFileGone
from shared.logging import Redactor
from shared.settings import Settings
from shared.startup import refuse, start_process
from shared.upstream import probe_transport
from shared.urls import system_resolver


async def run_until_stopped(settings: Settings, database: Database, redactor: Redactor) -> None:
    """Probe until SIGTERM or SIGINT, then return so the process exits 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    transport = probe_transport(settings, system_resolver)
    notifications = probe_transport(settings, system_resolver, exempt_configured=False)

    def make_daemon(fenced: Database, instance: str) -> Daemon:
        return Daemon(
            settings,
            fenced,
            transport,
            redactor=redactor,
            notifications=notifications,
            instance=instance,
            resume=True,
        )

    try:
        if database.engine.dialect.name == "postgresql":
            poll = min(STANDBY_POLL_SECONDS, settings.health_check_interval_seconds / 4)
            await run_elected(database, make_daemon, stop, poll_seconds=poll)
        else:
            daemon = Daemon(
                settings, database, transport, redactor=redactor, notifications=notifications
            )
            await daemon.run(stop)
    finally:
        transport.close()
        notifications.close()


def main() -> None:
    process = start_process("healthd", default_component="health_checker")
    port = process.settings.healthd_metrics_port
    if port:
        try:
            metrics.serve(port)
        except OSError as error:
            refuse("healthd", f"HEALTHD_METRICS_PORT {port}: {error.strerror}")
    try:
        with single_on_sqlite(process.database):
            asyncio.run(run_until_stopped(process.settings, process.database, process.redactor))
    except AnotherHealthd as error:
        refuse("healthd", error)
    except DatabaseFileGone as error:
        # Exit 1, so a supervisor restarts it on the file now at the path (whose schema
        # the start checks, as always).
        sys.stderr.write(f"healthd: {error}; stopped\n")
        raise SystemExit(1) from None
    finally:
        process.database.dispose()


if __name__ == "__main__":
    main()
