"""One active healthd among several: a PostgreSQL advisory lock, held by a connection.

Why an advisory lock and not a lease row: the lock lives exactly as long as
the session that took it. A healthd killed with -9 closes its socket, the
server ends its session and the lock is free at once (a machine that vanishes
without a word is found out by TCP keepalives within about 10 s); a lease row
would have to expire on a clock, so a standby could take over no sooner than
the lease's length. The lock needs no clock shared between machines either.

Fencing: a lock holder can lose its connection (and so the lock) while a write
of its own is on the way through another connection. `Fence` makes every
write transaction of the active healthd first check, inside that transaction,
that the lock is still held by its session (`pg_locks`), and refuse otherwise
(`NotActive`), so a healthd that lost the lock writes nothing more, even before
it notices.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from shared.cluster.listen import libpq_url
from shared.db import Database

# The advisory lock's key (one 64-bit number for the whole database): "healthd" in ASCII.
HEALTHD_LOCK_KEY = 0x6865616C746864
# A machine that vanished is given up on by TCP after about idle + interval x count s.
KEEPALIVES = "keepalives=1 keepalives_idle=5 keepalives_interval=1 keepalives_count=3"


def with_options(url: str, options: str) -> str:
    """A libpq URL with more of libpq's options ("name=value ...") in its query."""
    return url + ("&" if "?" in url else "?") + options.replace(" ", "&")


class NotActive(SQLAlchemyError):
    """A write of a healthd that no longer holds the lock (refused before it happened)."""


class AdvisoryLock:
    """A session-level advisory lock on a dedicated connection (autocommit)."""

    def __init__(self, url: str, key: int = HEALTHD_LOCK_KEY) -> None:
        self.url = url
        self.key = key
        self.connection: psycopg.AsyncConnection[Any] | None = None
        self.backend_pid: int | None = None  # the session holding the lock, while held

    async def try_acquire(self) -> bool:
        """Take the lock if it is free (connecting first if need be); never waits for it."""
        if self.connection is None or self.connection.closed:
            self.connection = await psycopg.AsyncConnection.connect(
                with_options(libpq_url(self.url), KEEPALIVES),
                autocommit=True,
                connect_timeout=5,
            )
        cursor = await self.connection.execute(
            "SELECT pg_try_advisory_lock(%s), pg_backend_pid()", (self.key,)
        )
        row = await cursor.fetchone()
        if row is None or not row[0]:
            return False
        self.backend_pid = int(row[1])
        return True

    async def still_held(self) -> bool:
        """Whether the connection (so the lock) is alive: one round trip."""
        if self.connection is None or self.connection.closed or self.backend_pid is None:
            return False
        try:
            await self.connection.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    async def close(self) -> None:
        """Let go: closing the session frees the lock."""
        self.backend_pid = None
        if self.connection is not None:
            await self.connection.close()
            self.connection = None


@dataclass
class Fence:
    """What the active healthd's writes check first: that `backend_pid` holds the lock."""

    key: int = HEALTHD_LOCK_KEY
    backend_pid: int | None = None

    def check(self, session: Session) -> None:
        if self.backend_pid is None:
            raise NotActive("this healthd does not hold the lock")
        held = session.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = :pid AND ((classid::bigint << 32) | objid::bigint) = :key"
            ),
            {"pid": self.backend_pid, "key": self.key},
        )
        if not held:
            raise NotActive("this healthd lost the lock; another one is active")


@dataclass(frozen=True)
class FencedDatabase(Database):
    """A Database whose write transactions first check the fence (PostgreSQL)."""

    fence: Fence = field(default_factory=Fence)

    @contextmanager
    def writing(
        self, *, durable: bool = False, busy_timeout_ms: int | None = None
    ) -> Iterator[Session]:
        with super().writing(durable=durable, busy_timeout_ms=busy_timeout_ms) as session:
            self.fence.check(session)
            yield session

    @classmethod
    def around(cls, database: Database, fence: Fence) -> FencedDatabase:
        return cls(database.engine, database.sessions, database.file, fence)


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `stop` is set first; whether it was."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True
