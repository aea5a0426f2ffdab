"""Which healthd probes: the only one on SQLite, the elected one on PostgreSQL.

On PostgreSQL any number of healthd run; the one holding the advisory lock
(`shared.cluster.election`) is active: it probes and writes, its writes
fenced by the lock. The others are standbys: each writes a heartbeat with its
role and tries the lock every STANDBY_POLL_SECONDS (at most a quarter of
HEALTH_CHECK_INTERVAL_SECONDS), so when the active one dies (its session ends,
and the lock with it) one of them takes over well within two intervals,
keeping the schedule of the history (`Daemon(resume=True)`).

On SQLite, one machine and one file, a second healthd would probe everything
twice and double every check row: `single_on_sqlite` holds an exclusive lock
on a file beside the database for the process's life, and a second healthd
says so and exits 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from healthd import store
from healthd.daemon import STANDBY, Daemon, instance_name
from shared.db import Database
from shared.logging import get_logger
from shared.models import utcnow

STANDBY_POLL_SECONDS = 1.0
LOCK_CHECK_SECONDS = 0.5

log = get_logger("health_checker")

if TYPE_CHECKING:
    from shared.cluster.election import AdvisoryLock


class AnotherHealthd(Exception):
    """A second healthd on a SQLite database."""


@contextmanager
def single_on_sqlite(database: Database) -> Iterator[None]:
    """Hold `<database file>.healthd.lock` exclusively while the block runs (the kernel
    frees it when the process dies, however it dies)."""
    if database.file is None:
        yield
        return
    path = Path(f"{database.file.path}.healthd.lock")
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise AnotherHealthd(
                f"another healthd (pid {holder}) already runs on {database.file.path}; on "
                "SQLite only one may run (use PostgreSQL for an active and standby healthd)"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield


async def _watch_lock(lock: AdvisoryLock, lost: asyncio.Event, until: asyncio.Event) -> None:
    """Set `lost` and `until` when the lock's connection dies."""
    from shared.cluster.election import wait_or_stop

    while not until.is_set():
        if not await lock.still_held():
            lost.set()
            until.set()
            return
        await wait_or_stop(until, LOCK_CHECK_SECONDS)


async def _stand_by(database: Database, instance: str) -> None:
    try:
        await asyncio.to_thread(store.beat, database, utcnow(), os.getpid(), instance, STANDBY)
    except SQLAlchemyError as error:
        log.warning("standby heartbeat not written", error_type=type(error).__name__)


async def _try_lock(lock: AdvisoryLock, failing: bool) -> tuple[bool, bool]:
    """(acquired, failing): a database that cannot be reached is logged once."""
    import psycopg

    try:
        acquired = await lock.try_acquire()
    except psycopg.Error as error:
        if not failing:
            log.warning("cannot reach the database for the election", error=str(error))
        await lock.close()
        return False, True
    return acquired, False


async def run_elected(
    database: Database,
    make_daemon: Callable[[Database, str], Daemon],
    stop: asyncio.Event,
    *,
    poll_seconds: float = STANDBY_POLL_SECONDS,
) -> None:
    """Stand by until the lock is had, then run a Daemon until `stop` (or the lock is
    lost: then stand by again, with a fresh Daemon next time). psycopg (the `cluster`
    extra) is imported here, on PostgreSQL only."""
    from shared.cluster.election import AdvisoryLock, Fence, FencedDatabase, wait_or_stop

    instance = instance_name()
    url = database.engine.url.render_as_string(hide_password=False)
    lock, fence = AdvisoryLock(url), Fence()
    failing, announced = False, False
    try:
        while not stop.is_set():
            acquired, failing = await _try_lock(lock, failing)
            if not acquired:
                if not announced and not failing:
                    log.info("standby: another healthd is active", instance=instance)
                    announced = True
                await _stand_by(database, instance)
                await wait_or_stop(stop, poll_seconds)
                continue
            log.info("active: this healthd holds the lock", instance=instance)
            fence.backend_pid = lock.backend_pid
            lost, until = asyncio.Event(), asyncio.Event()
            forward = asyncio.create_task(_forward(stop, until))
            watch = asyncio.create_task(_watch_lock(lock, lost, until))
            try:
                await make_daemon(FencedDatabase.around(database, fence), instance).run(until)
            finally:
                fence.backend_pid = None
                for task in (forward, watch):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if lost.is_set():
                log.warning("lost the healthd lock; standing by", instance=instance)
                await lock.close()
                announced = False
    finally:
        await lock.close()


async def _forward(stop: asyncio.Event, until: asyncio.Event) -> None:
    await stop.wait()
    until.set()
