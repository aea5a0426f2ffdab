"""What the request path learns, buffered in memory and written off the path.

Requests call `record()` and `request_check()`, which only touch dicts. A
background task (`flush_forever`) writes everything gathered since the last
flush in one transaction: usage totals into `backend_usage`, and a check
request (`check_requests`, as the dashboard's "check now" does) for every
backend this process ejected, so healthd probes it at once and, if it is
really down, takes it out of every worker's routing.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute, Session

from gateway.accounting.mismatch import MismatchPolicy, Tallies, Tally, seen, write_tallies
from gateway.accounting.windows import BUCKETS, Counts
from shared.db import Database, upsert
from shared.logging import get_logger
from shared.models import (
    BackendUsage,
    CheckRequest,
    ClientKey,
    KeyUsageMinute,
    ModelServer,
    ResponseOwner,
    UsageMinute,
    utcnow,
)

FLUSH_SECONDS = 2.0
# Response owners older than this are forgotten (backends do not keep responses
# forever either); the pruning runs in one batch in a hundred that writes owners.
RESPONSES_KEPT = timedelta(days=30)
PRUNE_CHANCE = 0.01
MINUTES_KEPT = 25 * 60  # per-minute counts: a day's window, and an hour to spare
# A person's usage per minute: 90 days (a course's term), for their history and quotas.
KEY_MINUTES_KEPT = 90 * 24 * 60

log = get_logger("registry")


@dataclass
class UsageDelta:
    requests: int = 0
    failures: int = 0
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_request_at: datetime | None = None

    def add(self, other: UsageDelta) -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.latency_ms += other.latency_ms
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        if other.last_request_at and (
            self.last_request_at is None or other.last_request_at > self.last_request_at
        ):
            self.last_request_at = other.last_request_at


@dataclass
class Batch:
    usage: dict[str, UsageDelta] = field(default_factory=dict)
    checks: set[str] = field(default_factory=set)
    response_owners: dict[str, str] = field(default_factory=dict)  # response id → backend
    # (minute, backend, model) → what was served (for /admin/stats and the charts)
    minutes: dict[tuple[int, str, str], Counts] = field(default_factory=dict)
    # (minute, client key, model) → what the key's holder was served; key → last use
    key_minutes: dict[tuple[int, str, str], Counts] = field(default_factory=dict)
    keys_used: dict[str, float] = field(default_factory=dict)  # key → epoch seconds
    names: Tallies = field(default_factory=dict)  # what answers named (accounting/mismatch.py)

    def __bool__(self) -> bool:
        return bool(
            self.usage
            or self.checks
            or self.response_owners
            or self.minutes
            or self.key_minutes
            or self.names
        )


class Feedback:
    def __init__(self, mismatch: MismatchPolicy | None = None) -> None:
        self.pending = Batch()
        self.mismatch = mismatch or MismatchPolicy()
        # Bumped when a batch is taken and when its write ends: what was read of the
        # usage tables under another generation may be missing a batch (catalog/me.py).
        self.generation = 0

    def record(
        self,
        backend_id: str,
        *,
        ok: bool,
        latency_ms: float,
        usage: tuple[int, int] | None = None,
        model: str | None = None,
        first_token_ms: float | None = None,
    ) -> None:
        """Count one attempt; `usage` is (prompt_tokens, completion_tokens) when known."""
        if model is not None:
            key = (int(time.time() // 60), backend_id, model)
            counts = self.pending.minutes.get(key)
            if counts is None:
                counts = self.pending.minutes[key] = Counts()
            counts.observe(ok=ok, latency_ms=latency_ms, first_token_ms=first_token_ms, usage=usage)
        delta = self.pending.usage.get(backend_id)
        if delta is None:
            delta = self.pending.usage[backend_id] = UsageDelta()
        delta.requests += 1
        delta.failures += 0 if ok else 1
        delta.latency_ms += latency_ms
        if usage is not None:
            delta.prompt_tokens += usage[0]
            delta.completion_tokens += usage[1]
        delta.last_request_at = utcnow()

    def record_client(
        self,
        key_id: str,
        model: str,
        *,
        ok: bool,
        latency_ms: float,
        usage: tuple[int, int] | None,
    ) -> None:
        """Count one request of a client key (its usage per person: key_usage_minutes)."""
        now = time.time()
        key = (int(now // 60), key_id, model)
        counts = self.pending.key_minutes.get(key)
        if counts is None:
            counts = self.pending.key_minutes[key] = Counts()
        counts.observe(ok=ok, latency_ms=latency_ms, first_token_ms=None, usage=usage)
        self.pending.keys_used[key_id] = now

    def failed_over(self, backend_id: str, model: str) -> None:
        """A failed attempt on this backend whose request went on to another: in the
        statistics it is the backend's failure, not a request of its own."""
        key = (int(time.time() // 60), backend_id, model)
        counts = self.pending.minutes.get(key)
        if counts is None:
            counts = self.pending.minutes[key] = Counts()
        counts.retried += 1

    def named(self, backend_id: str, model: str, upstream: str | None, name: str | None) -> None:
        """An answer routed to `model` named `name` (counted: accounting/mismatch.py)."""
        seen(self.pending.names, backend_id, model, upstream, name)

    def request_check(self, backend_id: str) -> None:
        """Ask healthd to probe this backend now."""
        self.pending.checks.add(backend_id)

    def record_response_owner(self, response_id: str, backend_id: str) -> None:
        """Which backend made a Responses API response (gateway/routing/affinity.py)."""
        self.pending.response_owners[response_id] = backend_id

    def take(self) -> Batch:
        batch, self.pending = self.pending, Batch()
        self.generation += 1
        return batch

    def give_back(self, batch: Batch) -> None:
        """A flush failed: merge its contents back so nothing is lost."""
        for backend_id, delta in batch.usage.items():
            self.pending.usage.setdefault(backend_id, UsageDelta()).add(delta)
        self.pending.checks |= batch.checks
        self.pending.response_owners = batch.response_owners | self.pending.response_owners
        for key, counts in batch.minutes.items():
            self.pending.minutes[key] = counts.add(self.pending.minutes.get(key, Counts()))
        for key, counts in batch.key_minutes.items():
            self.pending.key_minutes[key] = counts.add(self.pending.key_minutes.get(key, Counts()))
        self.pending.keys_used = batch.keys_used | self.pending.keys_used
        for pair, tally in batch.names.items():
            self.pending.names.setdefault(pair, Tally()).add(tally)


def write_batch(database: Database, batch: Batch, mismatch: MismatchPolicy | None = None) -> None:
    """Write one batch in one transaction (registrations gone since are skipped)."""
    now = utcnow()
    with database.writing() as session:
        existing = set(
            session.scalars(
                select(ModelServer.id).where(
                    ModelServer.id.in_(
                        {
                            *batch.usage,
                            *batch.checks,
                            *batch.response_owners.values(),
                            *(backend for _, backend, _ in batch.minutes),
                        }
                    )
                )
            )
        )
        for backend_id, delta in batch.usage.items():
            if backend_id not in existing:
                continue
            statement = upsert(session, BackendUsage).values(
                server_id=backend_id,
                requests_total=delta.requests,
                failures_total=delta.failures,
                latency_ms_total=delta.latency_ms,
                prompt_tokens_total=delta.prompt_tokens,
                completion_tokens_total=delta.completion_tokens,
                last_request_at=delta.last_request_at,
            )
            excluded = statement.excluded
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[BackendUsage.server_id],
                    set_={
                        "requests_total": BackendUsage.requests_total + excluded.requests_total,
                        "failures_total": BackendUsage.failures_total + excluded.failures_total,
                        "latency_ms_total": BackendUsage.latency_ms_total
                        + excluded.latency_ms_total,
                        "prompt_tokens_total": BackendUsage.prompt_tokens_total
                        + excluded.prompt_tokens_total,
                        "completion_tokens_total": BackendUsage.completion_tokens_total
                        + excluded.completion_tokens_total,
                        "last_request_at": excluded.last_request_at,
                    },
                )
            )
        for backend_id in batch.checks & existing:
            session.add(CheckRequest(server_id=backend_id, requested_at=now))
        add_minutes(session, {k: v for k, v in batch.minutes.items() if k[1] in existing})
        add_key_minutes(session, batch.key_minutes, batch.keys_used)
        write_tallies(session, batch.names, mismatch or MismatchPolicy())
        owners = [
            {"response_id": response_id, "server_id": backend_id, "created_at": now}
            for response_id, backend_id in batch.response_owners.items()
            if backend_id in existing
        ]
        if owners:
            session.execute(upsert(session, ResponseOwner).values(owners).on_conflict_do_nothing())
            if random.random() < PRUNE_CHANCE:
                session.execute(
                    delete(ResponseOwner).where(ResponseOwner.created_at < now - RESPONSES_KEPT)
                )


def locked_minutes(
    session: Session,
    table: type[UsageMinute] | type[KeyUsageMinute],
    columns: tuple[
        InstrumentedAttribute[int], InstrumentedAttribute[str], InstrumentedAttribute[str]
    ],
    keys: list[tuple[int, str, str]],
    empty: dict[str, object],
) -> dict[tuple[int, str, str], Any]:
    """The rows of `keys` (minute, owner id, model), locked for this transaction: made
    if missing (ON CONFLICT DO NOTHING, with the `empty` counts), then read FOR UPDATE
    in key order, so two writers (workers, instances) never wait on each other in a
    circle and their additions never overwrite each other (SQLite's BEGIN IMMEDIATE
    holds the whole file anyway)."""
    keys = sorted(keys)
    names = [column.key for column in columns]
    fresh = [{**dict(zip(names, key, strict=True)), **empty} for key in keys]
    session.execute(upsert(session, table).values(fresh).on_conflict_do_nothing())
    return {
        tuple(getattr(row, name) for name in names): row
        for row in session.scalars(
            select(table).where(tuple_(*columns).in_(keys)).order_by(*columns).with_for_update()
        )
    }


def add_minutes(session: Session, minutes: dict[tuple[int, str, str], Counts]) -> None:
    """Add this process's counts to the rows of other workers and instances."""
    if not minutes:
        return
    empty: dict[str, object] = {
        "requests": 0,
        "failures": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "latency_counts": [0] * BUCKETS,
        "first_token_counts": [0] * BUCKETS,
        "retried": 0,
    }
    rows = locked_minutes(
        session,
        UsageMinute,
        (UsageMinute.minute, UsageMinute.server_id, UsageMinute.model),
        list(minutes),
        empty,
    )
    for key, counts in minutes.items():
        row = rows[key]
        merged = Counts(
            row.requests,
            row.failures,
            row.prompt_tokens,
            row.completion_tokens,
            list(row.latency_counts),
            list(row.first_token_counts),
            row.retried,
        ).add(counts)
        row.requests, row.failures = merged.requests, merged.failures
        row.prompt_tokens, row.completion_tokens = merged.prompt_tokens, merged.completion_tokens
        row.latency_counts, row.first_token_counts = merged.latency, merged.first_token
        row.retried = merged.retried
    if random.random() < PRUNE_CHANCE:
        oldest = min(minute for minute, _, _ in minutes) - MINUTES_KEPT
        session.execute(delete(UsageMinute).where(UsageMinute.minute < oldest))


def add_key_minutes(
    session: Session,
    minutes: dict[tuple[int, str, str], Counts],
    used: dict[str, float],
) -> None:
    """Add this process's counts per client key to the other workers' rows (as
    add_minutes), and note when each key was last used (keys deleted since: skipped)."""
    if not minutes and not used:
        return
    known = set(
        session.scalars(
            select(ClientKey.id).where(
                ClientKey.id.in_({*used, *(key_id for _, key_id, _ in minutes)})
            )
        )
    )
    for key_id, when in used.items():
        if key_id in known:
            session.execute(
                update(ClientKey)
                .where(ClientKey.id == key_id)
                .values(last_used_at=datetime.fromtimestamp(when, UTC))
            )
    keys = [key for key in minutes if key[1] in known]
    if not keys:
        return
    empty: dict[str, object] = {
        "requests": 0,
        "failures": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "latency_counts": [0] * BUCKETS,
    }
    rows = locked_minutes(
        session,
        KeyUsageMinute,
        (KeyUsageMinute.minute, KeyUsageMinute.key_id, KeyUsageMinute.model),
        keys,
        empty,
    )
    for key in keys:
        row = rows[key]
        merged = Counts(
            row.requests,
            row.failures,
            row.prompt_tokens,
            row.completion_tokens,
            list(row.latency_counts),
            [0] * BUCKETS,
        ).add(minutes[key])
        row.requests, row.failures = merged.requests, merged.failures
        row.prompt_tokens, row.completion_tokens = merged.prompt_tokens, merged.completion_tokens
        row.latency_counts = merged.latency
    if random.random() < PRUNE_CHANCE:
        oldest = min(minute for minute, _, _ in keys) - KEY_MINUTES_KEPT
        session.execute(delete(KeyUsageMinute).where(KeyUsageMinute.minute < oldest))


async def flush(feedback: Feedback, database: Database) -> None:
    batch = feedback.take()
    if not batch:
        return
    try:
        await asyncio.to_thread(write_batch, database, batch, feedback.mismatch)
    except SQLAlchemyError as error:
        feedback.give_back(batch)
        log.warning("could not write usage and check requests; will retry", error=str(error))
    finally:
        feedback.generation += 1


async def flush_forever(
    feedback: Feedback, database: Database, interval: float = FLUSH_SECONDS
) -> None:
    """Flush every `interval` seconds until cancelled (the app flushes once more at exit)."""
    while True:
        await asyncio.sleep(interval)
        await flush(feedback, database)
