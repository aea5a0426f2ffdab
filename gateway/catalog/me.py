"""`GET /v1/me`: a client's own key, limits and usage, asked with the key itself.

So a student can see what is left of the day's tokens without asking the admin.
The limits' standing comes from the counters (this machine's, or the shared
store); the usage from `key_usage_minutes`, which every worker adds to every few
seconds, plus what this worker has not written yet (other workers' last seconds
may be missing: at most one flush, FLUSH_SECONDS, behind).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.accounting.windows import Counts, current_minute
from gateway.admission.counters import DAY_SECONDS, Standing
from gateway.context import context_of
from gateway.openapi import DocumentedRoute, Operation
from shared.db import Database
from shared.errors import AuthenticationRequired, ServiceUnavailable
from shared.models import KeyUsageMinute
from shared.single_flight import SingleFlight

USAGE_READ_SECONDS = 1.0  # a key's usage rows are read at most this often per worker
# (name, minutes back from now; None: since 00:00 UTC)
WINDOWS: tuple[tuple[str, int | None], ...] = (("today", None), ("1h", 60), ("24h", 1440))


def _first_minutes(now: float) -> dict[str, int]:
    minute = current_minute(now)
    return {
        name: int(now // DAY_SECONDS) * (DAY_SECONDS // 60) if back is None else minute - back + 1
        for name, back in WINDOWS
    }


UsageRows = list[tuple[int, str, int, int, int, int]]


def read_usage(database: Database, key_id: str, since: int) -> UsageRows:
    """(minute, model, requests, failures, prompt, completion) of a key since a minute."""
    with database.reading() as session:
        rows = session.execute(
            select(
                KeyUsageMinute.minute,
                KeyUsageMinute.model,
                func.sum(KeyUsageMinute.requests),
                func.sum(KeyUsageMinute.failures),
                func.sum(KeyUsageMinute.prompt_tokens),
                func.sum(KeyUsageMinute.completion_tokens),
            )
            .where(KeyUsageMinute.key_id == key_id, KeyUsageMinute.minute >= since)
            .group_by(KeyUsageMinute.minute, KeyUsageMinute.model)
        )
        return [
            (int(minute), str(model), int(requests), int(failures), int(prompt), int(completion))
            for minute, model, requests, failures, prompt, completion in rows
        ]


class UsageReads:
    """Each key's usage rows, read at most once per USAGE_READ_SECONDS per worker, with
    one read for any number of callers at once: /v1/me is the key holder's to call as
    often as it likes (it does not count against the key's limits), the database is
    everyone's. A read is reused only while this worker has taken and written no batch since
    (its own requests show at once: `usage_of` adds what it has not written)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.flights: SingleFlight[tuple[str, int, int], UsageRows] = SingleFlight()
        # (key id, first minute) -> (read at (monotonic), the feedback's generation, rows)
        self.kept: dict[tuple[str, int], tuple[float, int, UsageRows]] = {}

    async def rows(self, key_id: str, since: int, generation: int) -> UsageRows:
        kept = self.kept.get((key_id, since))
        now = time.monotonic()
        if kept is not None and now - kept[0] < USAGE_READ_SECONDS and kept[1] == generation:
            return kept[2]

        async def read() -> UsageRows:
            rows = await run_in_threadpool(read_usage, self.database, key_id, since)
            if len(self.kept) >= 10_000:
                self.kept.clear()
            self.kept[key_id, since] = (now, generation, rows)
            return rows

        return await self.flights.run((key_id, since, generation), read)


_READS: weakref.WeakKeyDictionary[Database, UsageReads] = weakref.WeakKeyDictionary()


def usage_reads(database: Database) -> UsageReads:
    reads = _READS.get(database)
    if reads is None:
        reads = _READS[database] = UsageReads(database)
    return reads


def _totals() -> dict[str, int]:
    return {"requests": 0, "failures": 0, "prompt_tokens": 0, "completion_tokens": 0}


def _add(into: dict[str, int], requests: int, failures: int, prompt: int, completion: int) -> None:
    into["requests"] += requests
    into["failures"] += failures
    into["prompt_tokens"] += prompt
    into["completion_tokens"] += completion


def usage_of(
    rows: list[tuple[int, str, int, int, int, int]],
    pending: dict[tuple[int, str, str], Counts],
    key_id: str,
    now: float,
) -> dict[str, Any]:
    """The usage over each window, and today's per model (pure)."""
    firsts = _first_minutes(now)
    windows = {name: _totals() for name in firsts}
    models: dict[str, dict[str, int]] = {}
    every = list(rows) + [
        (minute, model, c.requests, c.failures, c.prompt_tokens, c.completion_tokens)
        for (minute, key, model), c in pending.items()
        if key == key_id
    ]
    for minute, model, requests, failures, prompt, completion in every:
        for name, first in firsts.items():
            if minute >= first:
                _add(windows[name], requests, failures, prompt, completion)
        if minute >= firsts["today"]:
            _add(models.setdefault(model, _totals()), requests, failures, prompt, completion)
    return {**windows, "today_by_model": dict(sorted(models.items()))}


def standing_view(standing: Standing) -> dict[str, Any]:
    limits = standing.limits
    return {
        "limits": {
            "requests_per_minute": limits.requests_per_minute or None,
            "tokens_per_minute": limits.tokens_per_minute or None,
            "tokens_per_day": limits.tokens_per_day or None,
            "max_concurrent": limits.max_concurrent or None,
            "priority": limits.priority,
        },
        "remaining": {
            "requests_this_minute": standing.requests_remaining,
            "tokens_this_minute": standing.tokens_remaining,
            "tokens_today": standing.day_remaining,
        },
        "reset_seconds": {
            "requests": round(standing.requests_reset, 3),
            "tokens": round(standing.tokens_reset, 3),
            "tokens_today": round(standing.day_reset, 3),
        },
        "in_flight": standing.in_flight,
    }


async def me(request: Request) -> Response:
    context = context_of(request)
    runtime = context.proxy
    if runtime is None:
        raise ServiceUnavailable("the gateway is starting or stopping")
    caller = runtime.access.identify(
        request.headers.get("authorization"),
        request.client.host if request.client else "unknown",
        request.headers.get("x-api-key"),
    )
    client = caller.client
    if client is None:
        raise AuthenticationRequired(
            "GET /v1/me tells a key's holder about their key: send it as "
            "'Authorization: Bearer <key>'"
        )
    standing = await runtime.access.store.standing(caller.subject, caller.limits)
    usage = None
    if client.key_id is not None:
        now = time.time()
        since = min(_first_minutes(now).values())
        feedback = runtime.feedback
        generation = feedback.generation
        rows = await usage_reads(context.database).rows(client.key_id, since, generation)
        usage = usage_of(rows, feedback.pending.key_minutes, client.key_id, now)
    return JSONResponse(
        {
            "key": {
                "id": client.key_id,
                "name": client.name,
                "owner": client.owner,
                "group": client.group,
                "prefix": client.prefix,
                "expires_at": client.expires_at,
                "models": sorted(client.models) if client.models is not None else None,
            },
            **standing_view(standing),
            "usage": usage,
        }
    )


def me_routes() -> list[DocumentedRoute]:
    return [
        DocumentedRoute(
            "/me",
            me,
            method="GET",
            operation=Operation(
                summary="Your key: its limits, what is left of them, and your usage",
                description="Asked with the client key itself (`Authorization: Bearer "
                "<key>`): the key's name, owner, group and models; each limit, what is "
                "left of it and when it is full again; requests and tokens today (UTC), "
                "over the last hour and 24 hours, and today's per model. Does not count "
                "against the key's limits.",
                tag="inference",
                responses={200: "the key's standing and usage", 401: "no key, or not valid"},
                extra_schema={"security": [{"ClientKey": []}]},
            ),
        )
    ]
