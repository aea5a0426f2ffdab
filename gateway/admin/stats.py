"""`GET /admin/stats?window=5m|1h|24h`: the pool's statistics over a window.

Two sides, named apart: what the servers served (`hosts`; the top-level figures, as
before keys existed) and what client keys were served (`clients`, `keys`: from
`key_usage_minutes`; key_windows.py's arithmetic). The `owner` filter covers both.

Read from `usage_minutes`, where every worker adds what it served every few
seconds (so the figures are all workers', up to one flush behind), with the
registrations for health, owner and routing weight; in-flight requests come
from the workers' metrics. The arithmetic is gateway/accounting/windows.py's.
"""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.accounting.key_windows import summarize_keys
from gateway.accounting.usage_window import read_key_window, read_window
from gateway.accounting.windows import current_minute, summarize, window_minutes
from gateway.admin.auth import own_registration
from gateway.context import context_of
from gateway.openapi import DocumentedRoute, Operation, QueryParameter
from gateway.prometheus import in_flight_by_backend
from shared.db import Database
from shared.errors import InvalidRequest, NotFound, PermissionDenied


async def stats(request: Request) -> Response:
    context = context_of(request)
    window = request.query_params.get("window", "1h")
    try:
        minutes = window_minutes(window)
    except ValueError as error:
        raise InvalidRequest(str(error), param="window") from None
    first = current_minute(time.time()) - minutes + 1
    rows, servers = await run_in_threadpool(read_window, context.database, first)
    # One backend's (its page), or one owner's (theirs): the same figures, fewer rows.
    backend, owner = request.query_params.get("backend"), request.query_params.get("owner")
    own = own_registration(request)
    if own is not None:
        # A host's token reads its own registration's figures and nothing of others'.
        if backend not in (None, own) or owner:
            raise PermissionDenied("a management token reads only its own registration's")
        backend = own
    if backend:
        rows = [row for row in rows if row.backend == backend]
        servers = {key: value for key, value in servers.items() if key == backend}
    if owner:
        servers = {key: value for key, value in servers.items() if value.owner == owner}
        rows = [row for row in rows if row.backend in servers]
    summary = summarize(
        rows,
        servers,
        first_minute=first,
        minutes=minutes,
        strategy=context.settings.routing_strategy,
        in_flight=in_flight_by_backend(context.proxy),
    )
    clients: dict[str, object] = {}
    if own is None:  # a host's token reads nothing of the clients
        clients = await run_in_threadpool(
            client_figures, context.database, first, minutes, owner, request.query_params.get("key")
        )
    backends = summary["backends"]
    if context.proxy is not None and isinstance(backends, list):
        for row in backends:  # the servers' own figures, as this worker last read them
            row["reported_load"] = context.proxy.scraper.describe(row["registration_id"])
    hosts = {"totals": summary["totals"], "servers": len(servers)}
    return JSONResponse({"window": window, **summary, "hosts": hosts, **clients})


def client_figures(
    database: Database, first: int, minutes: int, owner: str | None, key: str | None
) -> dict[str, object]:
    """The `clients` (totals, series) and `keys` of the answer: every key's, one
    owner's (`owner`: their keys, each with its own series) or one key's (`key`)."""
    rows, keys = read_key_window(database, first)
    if key:
        if key not in keys:
            raise NotFound(f"no client key with id {key!r}", param="key")
        chosen = {key}
    elif owner:
        chosen = {info.id for info in keys.values() if info.owner == owner}
    else:
        return summarize_keys(rows, keys, first_minute=first, minutes=minutes)
    return summarize_keys(
        rows,
        keys,
        first_minute=first,
        minutes=minutes,
        counted=chosen.__contains__,
        always=sorted(k for k in chosen if not keys[k].revoked or k == key),
        series_per_key=True,
    )


def stats_routes() -> list[DocumentedRoute]:
    return [
        DocumentedRoute(
            "/stats",
            stats,
            method="GET",
            operation=Operation(
                summary="Pool statistics over a window: totals, per model, backend and owner",
                description="Requests, success rate, latency and time to first token "
                "(p50, p95), tokens, in-flight requests, health and last error; each "
                "backend's share of its model's requests against the share its strategy "
                "and weight meant to give it; a series per minute for charts. `clients` "
                "and `keys`: what client keys were served (requests, tokens, latency), in "
                "all and per key.",
                tag="admin",
                query=(
                    QueryParameter("window", "5m, 1h (default) or 24h"),
                    QueryParameter("backend", "only this registration id"),
                    QueryParameter(
                        "owner",
                        "only this owner's (student_id): their servers' figures (top level "
                        "and `hosts`), their keys' (`clients`, `keys`)",
                    ),
                    QueryParameter("key", "only this client key's figures (`clients`, `keys`)"),
                ),
                responses={200: "the statistics", 400: "unknown window", 404: "no such key"},
            ),
        )
    ]
