"""Who a client is: the keys every worker knows, reloaded when they change.

The request path looks a key up here, by its SHA-256, in a dict: no database
I/O. A background task reads `keys_generation` (bumped by triggers when a key
or group changes, not when a key is merely used) every POLL_SECONDS and, when it
moved, reloads every key and group in one read and swaps the ring in. So a key
issued or revoked through any worker is honoured by every worker within about
POLL_SECONDS (and at once by the worker that wrote it: `catch_up`).

Keys of `CLIENT_API_KEYS` join the ring as keys without a name or a row: they
work as before, with the default limits, and are not accounted per person.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from gateway.admission.counters import ImmediateStore
from gateway.admission.key_format import key_hash, visible_prefix
from gateway.admission.limits import Limits, allowed_models, effective_limits
from shared.db import Database
from shared.logging import get_logger
from shared.models import ClientGroup, ClientKey, KeysGeneration, KeyUsageMinute
from shared.single_flight import SingleFlight

POLL_SECONDS = 0.2
FOUND_KEYS = 4096  # keys remembered by value per ring (KeyRing.found)
MAX_BACKOFF_SECONDS = 5.0

log = get_logger("api")


@dataclass(frozen=True)
class Client:
    """A key's holder, as the request path needs it."""

    key_id: str | None  # None: a key of CLIENT_API_KEYS (no row, no usage of its own)
    name: str
    owner: str | None
    group: str | None
    prefix: str
    limits: Limits
    models: frozenset[str] | None  # None: every model
    expires_at: float | None = None  # epoch seconds
    revoked_at: float | None = None
    subject: str = ""  # what its counters are kept under (made once, with the ring)

    def __post_init__(self) -> None:
        if not self.subject:
            object.__setattr__(self, "subject", f"key:{self.key_id or self.prefix}")

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True)
class KeyRing:
    generation: int = -1
    by_hash: Mapping[str, Client] = field(default_factory=dict)
    # Keys in the database that are neither revoked nor expired (at load): any of them
    # makes /v1 require a key, until the last of them expires (None: one never does).
    active_rows: int = 0
    last_expiry: float | None = None
    # Keys found in this ring, by the key itself: a client sends the same key with
    # every request, and its SHA-256 was a few µs of each. Kept only while this ring
    # is the current one (a revoked key is in the next ring's dict, not in this
    # cache), bounded, and never shown (repr).
    found: dict[str, Client] = field(default_factory=dict, repr=False, compare=False)

    def find(self, key: str) -> Client | None:
        client = self.found.get(key)
        if client is None:
            client = self.by_hash.get(key_hash(key))
            if client is not None:  # (unknown keys are not kept: anyone can send them)
                if len(self.found) >= FOUND_KEYS:
                    self.found.clear()
                self.found[key] = client
        return client

    def requires_key(self, now: float) -> bool:
        """Whether an active key exists now (one may have expired since the load)."""
        return self.active_rows > 0 and (self.last_expiry is None or now < self.last_expiry)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def static_clients(keys: Iterable[str], defaults: Limits) -> dict[str, Client]:
    """The ring's entries for CLIENT_API_KEYS."""
    return {
        key_hash(key): Client(
            key_id=None,
            name="CLIENT_API_KEYS",
            owner=None,
            group=None,
            prefix=visible_prefix(key),
            limits=defaults,
            models=None,
        )
        for key in keys
    }


def read_keys_generation(database: Database) -> int:
    database.check_file()  # (a poll's new connection would make an empty file)
    with database.reading() as session:
        value = session.scalar(select(KeysGeneration.value).where(KeysGeneration.id == 1))
        return int(value or 0)


def load_keyring(
    database: Database, defaults: Limits, static: Mapping[str, Client], now: float
) -> KeyRing:
    """Every key and group, read in one transaction with the generation."""
    database.check_file()
    with database.reading() as session:
        generation = session.scalar(select(KeysGeneration.value).where(KeysGeneration.id == 1))
        groups = {group.name: group for group in session.scalars(select(ClientGroup))}
        rows = list(session.scalars(select(ClientKey)))
    by_hash = dict(static)
    active = 0
    never_expire, last_expiry = False, 0.0
    for row in rows:
        group = groups.get(row.group_name) if row.group_name else None
        # A key whose group is gone (deleted as the key was moved into it) may use
        # nothing until it is put right: never every model.
        orphan = row.group_name is not None and group is None
        client = Client(
            key_id=row.id,
            name=row.name,
            owner=row.owner,
            group=row.group_name,
            prefix=row.prefix,
            limits=effective_limits(row.limits, group.limits if group else None, defaults),
            models=frozenset()
            if orphan
            else allowed_models(row.models, group.models if group else None),
            expires_at=_epoch(row.expires_at),
            revoked_at=_epoch(row.revoked_at),
        )
        by_hash[row.key_hash] = client
        if client.revoked_at is None and (client.expires_at is None or client.expires_at > now):
            active += 1
            if client.expires_at is None:
                never_expire = True
            else:
                last_expiry = max(last_expiry, client.expires_at)
    return KeyRing(int(generation or 0), by_hash, active, None if never_expire else last_expiry)


def tokens_used_today(database: Database, now: float) -> dict[str, int]:
    """Each key's prompt + completion tokens since 00:00 UTC, from key_usage_minutes."""
    first = int(now // 86_400) * 1440
    with database.reading() as session:
        rows = session.execute(
            select(
                KeyUsageMinute.key_id,
                func.sum(KeyUsageMinute.prompt_tokens + KeyUsageMinute.completion_tokens),
            )
            .where(KeyUsageMinute.minute >= first)
            .group_by(KeyUsageMinute.key_id)
        )
        return {str(key_id): int(total or 0) for key_id, total in rows}


def seed_today(database: Database, store: ImmediateStore) -> None:
    """Each key's tokens used today (UTC), into a fresh store: a restart does not give a
    key its day again."""
    for key_id, tokens in tokens_used_today(database, time.time()).items():
        store.seed_day(f"key:{key_id}", tokens)


class KeyRingHolder:
    """The current ring, swapped whole; `catch_up` reloads now if the database moved."""

    def __init__(self, database: Database, defaults: Limits, static: Mapping[str, Client]) -> None:
        self.database = database
        self.defaults = defaults
        self.static = static
        self.current = KeyRing(by_hash=dict(static))
        self._catching_up: SingleFlight[None, None] = SingleFlight()

    async def refresh(self) -> None:
        generation = await asyncio.to_thread(read_keys_generation, self.database)
        if generation != self.current.generation:
            self.current = await asyncio.to_thread(
                load_keyring, self.database, self.defaults, self.static, time.time()
            )

    async def catch_up(self) -> None:
        await self._catching_up.run(None, self.refresh)


async def watch_keys(holder: KeyRingHolder, interval: float = POLL_SECONDS) -> None:
    """Keep the ring current until cancelled; a failed reload keeps the last ring (and is
    logged once until it recovers), tried again after a growing pause."""
    delay = interval
    while True:
        try:
            await holder.refresh()
            if delay > interval:
                log.info("client keys reload recovered")
            delay = interval
        except (SQLAlchemyError, OSError) as error:
            if delay == interval:
                log.warning("client keys reload failed; using the last keys", error=str(error))
            delay = min(MAX_BACKOFF_SECONDS, delay * 2)
        await asyncio.sleep(delay)
