"""`POST /admin/leases`: a registration held by the host's open connection.

The body is a registration's. Sent with the admin key or a registration key, it
registers the server (probed like any registration); sent with the
`X-Management-Token` of an existing registration, it re-attaches to that one
(re-activated if it had expired, resumed if it was draining). The answer is an
SSE stream: a `registered` event (the registration id, and the management
token the first time), then a `heartbeat` event every LEASE_HEARTBEAT_SECONDS
with the server's health.

The expiry lives in the database: each heartbeat sets it to now + heartbeat +
LEASE_GRACE_SECONDS, and the stream's end to now + grace. healthd deactivates
registrations whose lease expired (healthd/store.py), so a lease whose gateway
process died expires all the same, with any number of workers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.admin.api import register_new
from gateway.admin.schemas import RegisterRequest
from gateway.admin.tokens import token_hash
from gateway.context import context_of
from gateway.json_bodies import parse_body
from gateway.openapi import DocumentedRoute, Operation
from shared.db import Database
from shared.errors import PermissionDenied
from shared.logging import get_logger
from shared.models import ModelServer, utcnow

log = get_logger("api")


@dataclass(frozen=True)
class LeaseState:
    registration_id: str
    health: str
    draining: bool


@dataclass(frozen=True)
class Lease:
    """One open lease: its registration, and when it connected (which tells it from a
    later lease of the same registration: a host that came back before its old
    connection was noticed gone)."""

    registration_id: str
    connected_at: datetime


def attach(database: Database, token: str, lease_seconds: float) -> Lease | None:
    """Re-attach the registration `token` manages: active again, not draining, leased."""
    now = utcnow()
    with database.writing(durable=True) as session:
        server = session.scalars(
            select(ModelServer).where(ModelServer.management_token_hash == token_hash(token))
        ).first()
        if server is None:
            return None
        server.is_active, server.deregistered_at, server.draining = True, None, False
        server.lease_connected_at = server.lease_heartbeat_at = now
        server.lease_expires_at = now + timedelta(seconds=lease_seconds)
        server.updated_at = now
        return Lease(server.id, now)


def _held(server: ModelServer | None, lease: Lease) -> bool:
    return server is not None and server.lease_connected_at == lease.connected_at


def renew(database: Database, lease: Lease, lease_seconds: float) -> LeaseState | None:
    """One heartbeat: the lease pushed out; what the host should hear of its server.
    None when the lease is over (deregistered, or a newer lease took the registration)."""
    now = utcnow()
    with database.writing() as session:
        server = session.get(ModelServer, lease.registration_id)
        if server is None or not server.is_active or not _held(server, lease):
            return None
        server.lease_heartbeat_at = now
        server.lease_expires_at = now + timedelta(seconds=lease_seconds)
        return LeaseState(server.id, server.health_status, server.draining)


def release(database: Database, lease: Lease, grace_seconds: float) -> None:
    """The stream ended: routable for the grace, then healthd deactivates it (unless a
    newer lease holds the registration already)."""
    now = utcnow()
    with database.writing() as session:
        server = session.get(ModelServer, lease.registration_id)
        if server is not None and _held(server, lease):
            server.lease_connected_at = None
            server.lease_expires_at = now + timedelta(seconds=grace_seconds)


def _event(kind: str, data: dict[str, object]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def open_lease(request: Request) -> Response:
    context = context_of(request)
    settings = context.settings
    heartbeat, grace = settings.lease_heartbeat_seconds, settings.lease_grace_seconds
    payload = await parse_body(request, RegisterRequest)
    token = request.headers.get("x-management-token")
    shown_token: str | None = None
    if token:
        lease = await run_in_threadpool(attach, context.database, token, heartbeat + grace)
        if lease is None:
            raise PermissionDenied("this management token manages no registration")
    else:
        _, shown_token = await register_new(context, payload)
        lease = await run_in_threadpool(attach, context.database, shown_token, heartbeat + grace)
        assert lease is not None  # registered a moment ago
    registration_id = lease.registration_id
    await context.registry_written()
    log.info("lease opened", registration_id=registration_id, new=shown_token is not None)

    async def events() -> AsyncIterator[bytes]:
        first: dict[str, object] = {"registration_id": registration_id}
        if shown_token is not None:
            first["management_token"] = shown_token
        try:
            yield _event("registered", first)
            while True:
                state = await asyncio.to_thread(renew, context.database, lease, heartbeat + grace)
                if state is None:
                    reason = "deregistered, or held by a newer lease"
                    yield _event("ended", {"reason": reason})
                    return
                yield _event(
                    "heartbeat",
                    {"registration_id": registration_id, "health": state.health,
                     "draining": state.draining},
                )  # fmt: skip
                await asyncio.sleep(heartbeat)
        finally:
            # Blocking on purpose: the task may be cancelled (the host left).
            release(context.database, lease, grace)
            log.info("lease released", registration_id=registration_id, grace_seconds=grace)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def lease_routes() -> list[DocumentedRoute]:
    return [
        DocumentedRoute(
            "/leases",
            open_lease,
            method="POST",
            operation=Operation(
                summary="Register (or re-attach) a server and hold it while this stream is open",
                description="Admin key or a registration key registers; X-Management-Token "
                "re-attaches its registration. SSE: `registered`, then `heartbeat` every "
                "LEASE_HEARTBEAT_SECONDS. When the stream ends the registration stays "
                "routable for LEASE_GRACE_SECONDS, then is deactivated.",
                tag="admin",
                request_model=RegisterRequest,
                responses={
                    200: "the lease's event stream",
                    400: "invalid registration",
                    403: "a token that manages nothing",
                    503: "the server failed its probe",
                },
                needs_admin_key=True,
            ),
        )
    ]
