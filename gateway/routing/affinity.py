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
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from shared.db import Database, upsert
from shared.logging import get_logger
from shared.models import ResponseOwner, utcnow

MAX_REMEMBERED = 100_000  # ids kept in memory per process (about 20 MB at most)
MAX_RESPONSE_ID = 256
OWNER_WRITE_SECONDS = 1.0  # past this, the owner goes with the next usage batch

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
    ) -> None:
        self.later = later
        self.database = database
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

    def close(self) -> None:
        self.writer.shutdown(wait=False, cancel_futures=True)
