"""`gateway`: check settings and schema, register the configured servers, then serve the
app under uvicorn; SIGHUP re-reads BACKENDS_FILE without a restart."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any, cast

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from gateway.admin.configured import (
    ConfigurationError,
    SyncReport,
    configured_backends,
    sync_configured,
)
from gateway.admin.leases import end_lease_streams
from gateway.admin.schemas import RegisterRequest
from gateway.admission.keyring import seed_today
from gateway.admission.shared_counters import (
    COUNTERS_DIR_VARIABLE,
    SharedCounters,
    shared_memory_base,
)
from gateway.client_connections import ConnectionGuard, ConnectionLimits, GuardedProtocol
from shared.db import Database, is_busy
from shared.logging import get_logger
from shared.settings import Settings
from shared.startup import refuse, start_process

SYSTEMD_FIRST_FD = 3


def socket_activated() -> bool:
    """True when systemd passed us the listening socket (multiverse-gateway.socket):
    a restart then queues connections in the socket instead of refusing them."""
    return os.environ.get("LISTEN_PID") == str(os.getpid()) and (
        os.environ.get("LISTEN_FDS", "0") not in ("", "0")
    )


class ClientProtocol(GuardedProtocol):
    """uvicorn tells each connection when its graceful shutdown begins: lease streams
    hear it too, and end at once (inference streams keep SHUTDOWN_GRACE_SECONDS)."""

    def shutdown(self) -> None:
        end_lease_streams(self.app_state)
        super().shutdown()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def register_configured(database: Database, settings: Settings) -> None:
    """BACKENDS, BACKENDS_FILE and UPSTREAM, registered once before the workers start."""
    try:
        entries = configured_backends(settings)
    except ConfigurationError as error:
        database.dispose()
        refuse("gateway", error)
    report = sync_configured(database, entries)
    if entries or report.deactivated:
        log_sync("servers from configuration", entries, report)


def log_sync(message: str, entries: list[RegisterRequest], report: SyncReport) -> None:
    get_logger("registry").info(
        message,
        declared=len(entries),
        registered=len(report.registered),
        updated=len(report.updated),
        deactivated=report.deactivated,
        left_to_the_api=len(report.left_to_the_api),
    )


def reload_configured(database: Database, settings: Settings) -> None:
    """SIGHUP: read BACKENDS_FILE again and bring the registry in line, as at start. A
    mistake in the file keeps the registrations as they are (the gateway keeps running);
    the workers follow through the registry's generation, as for any other change."""
    try:
        entries = configured_backends(settings)
        report = sync_configured(database, entries)
    except ConfigurationError as error:
        get_logger("registry").error("configuration not reloaded", problem=str(error))
        return
    except SQLAlchemyError as error:
        reason = "the database is busy" if is_busy(error) else type(error).__name__
        get_logger("registry").error("configuration not reloaded", problem=reason)
        return
    log_sync("configuration reloaded", entries, report)


def reload_on_hangup(database: Database, settings: Settings) -> None:
    """Re-read the configuration on each SIGHUP, in a thread of the supervisor process.

    SIGHUP is blocked in this thread before the workers start, so they (spawned from
    it) and uvicorn's own SIGHUP handler (restart the workers) never see it: only
    the thread that waits for it here, with sigwait, takes it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})

    def wait_and_reload() -> None:
        while True:
            signal.sigwait({signal.SIGHUP})
            reload_configured(database, settings)

    threading.Thread(target=wait_and_reload, name="config-reload", daemon=True).start()


def prepare_metrics_folder() -> Path | None:
    """PROMETHEUS_MULTIPROC_DIR, empty, before anything imports prometheus_client: each
    worker writes its metrics there, and /metrics adds them up. Values of a previous
    run would count twice, so an operator's folder is emptied. Returns the folder made
    here (removed at exit), if one was."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        made = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(made)
        return made
    for stale in Path(folder).glob("*.db"):
        stale.unlink()
    return None


def prepare_counters_folder() -> Path:
    """A fresh folder for the clients' counters (gateway/admission/shared_counters.py),
    shared by this run's workers through the environment they inherit, removed at
    exit. Fresh each run: the per-minute buckets of a stopped gateway start full
    again; the day's tokens are carried over (seed_days)."""
    made = Path(tempfile.mkdtemp(prefix="gateway-counters-", dir=shared_memory_base()))
    os.environ[COUNTERS_DIR_VARIABLE] = str(made)
    return made


def seed_days(database: Database, folder: Path) -> None:
    """Each key's tokens used today (UTC), into the counters the workers will share:
    a restart does not give a key its day again."""
    store = SharedCounters(folder)
    try:
        seed_today(database, store)
    finally:
        store.close()


def main() -> None:
    made = prepare_metrics_folder()
    counters = prepare_counters_folder()
    try:
        serve()
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        shutil.rmtree(counters, ignore_errors=True)


def serve() -> None:
    process = start_process("gateway", default_component="api")
    settings = process.settings
    register_configured(process.database, settings)
    if settings.workers > 1:  # (one worker keeps its counters itself, and seeds them)
        seed_days(process.database, Path(os.environ[COUNTERS_DIR_VARIABLE]))
    # Each uvicorn worker builds its own app, engine and logging (the factory); this
    # process keeps its engine's (closed) pool only for reloading on SIGHUP.
    process.database.dispose()
    reload_on_hangup(process.database, settings)
    listen: dict[str, Any] = (
        {"fd": SYSTEMD_FIRST_FD}
        if socket_activated()
        else {"host": settings.host, "port": settings.port}
    )
    # uvicorn drains, then re-raises the signal it caught with the handler that was
    # there before it: make that an ordinary exit 0, as systemd and make run expect.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    limits = ConnectionLimits(
        header_timeout=settings.header_timeout_seconds, max_connections=settings.max_connections
    )
    uvicorn.run(
        "gateway.app:create_app_from_environment",
        factory=True,
        http=cast(Any, functools.partial(ClientProtocol, guard=ConnectionGuard(limits))),
        **listen,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )


if __name__ == "__main__":
    main()
