"""`GET /v1/me`: a client's own key, limits and usage, asked with the key itself.

So a student can see what is left of the day's tokens without asking the admin.
The limits' standing comes from the counters (this machine's, or the shared
store); the usage from `key_usage_minutes`, which every worker adds to every few
seconds, plus what this worker has not written yet (other workers' last seconds
may be missing: at most one flush, FLUSH_SECONDS, behind).
"""

from __future__ import annotations

import time
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

# (name, minutes back from now; None: since 00:00 UTC)
WINDOWS: tuple[tuple[str, int | None], ...] = (("today", None), ("1h", 60), ("24h", 1440))


def _first_minutes(now: float) -> dict[str, int]:
    minute = current_minute(now)
    return {
        name: int(now // DAY_SECONDS) * (DAY_SECONDS // 60) if back is None else minute - back + 1
        for name, back in WINDOWS
    }


def read_usage(
    database: Database, key_id: str, since: int
) -> list[tuple[int, str, int, int, int, int]]:
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
        rows = await run_in_threadpool(read_usage, context.database, client.key_id, since)
        usage = usage_of(rows, runtime.feedback.pending.key_minutes, client.key_id, now)
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
