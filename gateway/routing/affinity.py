"""Responses API affinity: a conversation goes back to the backend that holds it.

A Responses API response is stored by the backend that made it: a request that
continues it (`previous_response_id`) and `GET/DELETE /v1/responses/{id}` must
go to that backend, not to any backend of the model. The gateway reads the
response's id from the answer (the JSON body, or a stream's `response.created`
event), remembers its owner in memory, and writes it to the database before
the client gets the answer that names the id (a follow-up may come at once,
to another worker): one small write, in a thread, bounded by
OWNER_WRITE_SECONDS; should it fail (the database busy), the owner goes with
the next usage batch instead. A process that does not know an id (another
worker made it, or it restarted) reads it once from the database.

With REDIS_URL (several instances), the owner is written to Redis instead
(one SET with the database's 30-day expiry, a millisecond), which every
instance reads on a miss before the database, and it goes to the database
with the next usage batch, off the request path. If Redis fails, this is
always fail-open, whatever REDIS_FAILURE_MODE says: the owner is written to
the database as without Redis (it is the record; nothing is refused).
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from shared.db import Database, upsert
from shared.logging import get_logger
from shared.models import ResponseOwner, utcnow

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from shared.cluster.redis_client import SharedRedis

MAX_REMEMBERED = 100_000  # ids kept in memory per process (about 20 MB at most)
MAX_RESPONSE_ID = 256
OWNER_WRITE_SECONDS = 1.0  # past this, the owner goes with the next usage batch
REDIS_OWNER_SECONDS = 30 * 24 * 3600  # as long as the database keeps it

log = get_logger("routing")


def _id_of(document: Any) -> str | None:
    if not isinstance(document, dict):
        return None
    if document.get("object") == "response":
        found = document.get("id")
    elif isinstance(document.get("response"), dict):  # a stream's response.created event
        found = document["response"].get("id")
    else:
        return None
    return found if isinstance(found, str) and 0 < len(found) <= MAX_RESPONSE_ID else None


def response_id_of(answer: bytes) -> str | None:
    """The id of a Responses API answer (a JSON `response` object)."""
    try:
        return _id_of(json.loads(answer))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def response_id_in_events(events: bytes) -> str | None:
    """The response id a stream announces in its first events (`response.created`)."""
    for line in events.splitlines():
        if line.startswith(b"data:"):
            found = response_id_of(line[5:])
            if found is not None:
                return found
    return None


def write_owner(database: Database, response_id: str, registration_id: str) -> None:
    # It waits for the lock no longer than the request waits for it (then the batch has it).
    with database.writing(busy_timeout_ms=int(OWNER_WRITE_SECONDS * 1000)) as session:
        row = {"response_id": response_id, "server_id": registration_id, "created_at": utcnow()}
        session.execute(upsert(session, ResponseOwner).values(row).on_conflict_do_nothing())


def read_owner(database: Database, response_id: str) -> str | None:
    with database.reading() as session:
        return session.scalar(
            select(ResponseOwner.server_id).where(ResponseOwner.response_id == response_id)
        )


class ResponseOwners:
    """response id → registration id: in memory (bounded, least recently used goes
    first), written through to the database (`later`, the usage batches, when that
    fails), read from the database on a miss."""

    def __init__(
        self,
        later: Callable[[str, str], None],
        database: Database | None,
        limit: int = MAX_REMEMBERED,
        redis: SharedRedis | None = None,
    ) -> None:
        self.later = later
        self.database = database
        self.redis = redis
        # Its own thread: a busy database (a backup) keeps these writes waiting, never the
        # default executor's threads, which the registry and the leases need meanwhile.
        self.writer = ThreadPoolExecutor(1, "response-owners")
        self.limit = limit
        self.known: OrderedDict[str, str] = OrderedDict()

    def _keep(self, response_id: str, backend_id: str) -> None:
        self.known[response_id] = backend_id
        self.known.move_to_end(response_id)
        if len(self.known) > self.limit:
            self.known.popitem(last=False)

    async def remember(self, response_id: str, backend_id: str) -> None:
        """Known here at once, and to every worker when this returns (or, should the
        write fail, with the next usage batch)."""
        self._keep(response_id, backend_id)
        if self.redis is not None and await self._remember_in_redis(response_id, backend_id):
            self.later(response_id, backend_id)  # the database's copy, off the path
            return
        if self.database is None:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(OWNER_WRITE_SECONDS):
                await loop.run_in_executor(
                    self.writer, write_owner, self.database, response_id, backend_id
                )
        except (SQLAlchemyError, TimeoutError) as error:
            log.warning("a response's backend goes with the next batch", error=str(error))
            self.later(response_id, backend_id)

    async def owner(self, response_id: str) -> str | None:
        """The registration that made `response_id`, or None if no gateway saw it made."""
        found = self.known.get(response_id)
        if found is not None:
            self.known.move_to_end(response_id)
            return found
        if self.redis is not None:
            found = await self._owner_in_redis(response_id)
            if found is not None:
                self._keep(response_id, found)
                return found
        if self.database is None:
            return None
        try:
            found = await asyncio.to_thread(read_owner, self.database, response_id)
        except SQLAlchemyError as error:
            log.warning("could not look up a response's backend", error=str(error))
            return None
        if found is not None:
            self._keep(response_id, found)
        return found

    async def _remember_in_redis(self, response_id: str, backend_id: str) -> bool:
        assert self.redis is not None
        key = self.redis.key("response_owner", response_id)

        async def write(client: Redis) -> bool:
            return bool(await client.set(key, backend_id, ex=REDIS_OWNER_SECONDS))

        return await self.redis.attempt(write, fallback=lambda: False, fail_open=True)

    async def _owner_in_redis(self, response_id: str) -> str | None:
        assert self.redis is not None
        key = self.redis.key("response_owner", response_id)

        async def read(client: Redis) -> str | None:
            found = await client.get(key)
            return found if isinstance(found, str) else None

        return await self.redis.attempt(read, fallback=lambda: None, fail_open=True)

    def close(self) -> None:
        self.writer.shutdown(wait=False, cancel_futures=True)
