"""`POST /admin/leases`: a registration held by the host's open connection.

The body is a registration's. Sent with the admin key or a registration key, it
registers the server (probed like any registration) and takes the lease in the
same transaction; sent with the `X-Management-Token` of an existing
registration, it re-attaches to that one: the body's fields applied, the
target probed first, then active again, not draining. A deregistration is
final (it revokes the token): re-attaching then answers 403 saying who
deregistered it. A lease that merely expired re-attaches (that is its point).

The answer is an SSE stream: a `registered` event (the registration id, and
the management token the first time), then a `heartbeat` every
LEASE_HEARTBEAT_SECONDS with the server's health. The agent acknowledges each
heartbeat (`POST /admin/leases/{id}/ack`), and only that renews the lease: a
frozen agent, or one behind a connection that died half-open, stops
acknowledging, so its lease runs out within heartbeat + grace. TCP options
(keepalive, TCP_USER_TIMEOUT) could not tell: a stopped process's kernel still
acknowledges every byte, and behind a reverse proxy our peer is the proxy.

The expiry lives in the database (now + heartbeat + LEASE_GRACE_SECONDS at each
acknowledgement, now + grace when the stream ends); healthd deactivates
registrations whose lease expired (healthd/store.py), so a lease whose gateway
process died expires all the same, with any number of workers. When the worker
shuts down, its lease streams end at once with a `reconnect` event (the grace
keeps the server routable while the agent finds another worker or process).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.admin import registrations
from gateway.admin.api import (
    check_notify_url,
    probe_target,
    register_new,
    require_listed,
    revealed_key,
    within_limits,
)
from gateway.admin.auth import Role, role_of
from gateway.admin.registrations import Target
from gateway.admin.schemas import RegisterRequest, UpdateRequest
from gateway.admin.tokens import Revoker, stored_forms
from gateway.context import GatewayContext, context_of
from gateway.json_bodies import json_response, parse_body
from gateway.openapi import DocumentedRoute, Operation
from gateway.ownership import names
from shared.db import Database
from shared.errors import NotFound, PermissionDenied
from shared.logging import get_logger
from shared.models import ModelServer, utcnow
from shared.probe import ProbeResult

log = get_logger("api")

# The key, in the lifespan state, of the event set when the worker's graceful
# shutdown begins (gateway/main.py's protocol sets it; app.py's lifespan makes it).
LEASE_STREAMS_END = "lease_streams_end"


@dataclass(frozen=True)
class LeaseState:
    registration_id: str
    health: str
    draining: bool
    reason: str | None = None  # the last check's error: why it is unhealthy
    since: datetime | None = None  # when the health last changed


@dataclass(frozen=True)
class Lease:
    """One open lease: its registration, and when it connected (which tells it from a
    later lease of the same registration: a host that came back before its old
    connection was noticed gone)."""

    registration_id: str
    connected_at: datetime


@dataclass(frozen=True)
class Holder:
    """The registration a lease's token is for (or was, if `revoked_by`)."""

    registration_id: str
    revoked_by: Revoker | None
    target: Target


def token_known(database: Database, token: str) -> bool:
    """Whether `token` is (or was, before a deregistration) any registration's: a read,
    so a made-up token costs no write lock."""
    with database.reading() as session:
        return _by_token(session, token) is not None


def holder_of(database: Database, token: str) -> Holder | None:
    with database.reading() as session:
        server = _by_token(session, token)
        if server is None:
            return None
        target = Target(
            server.endpoint_url, server.api_key, server.model_name, server.backend_model
        )
        return Holder(server.id, stored_forms(token)[server.management_token_hash or ""], target)


def _by_token(session: Session, token: str) -> ModelServer | None:
    forms = list(stored_forms(token))
    query = select(ModelServer).where(ModelServer.management_token_hash.in_(forms))
    return session.scalars(query.limit(1)).first()


def revoked(by: Revoker) -> PermissionDenied:
    who = "the admin" if by is Revoker.ADMIN else "its owner (with this token)"
    return PermissionDenied(
        f"this registration was deregistered by {who}, which revoked its management "
        "token; join again with a registration key to register the server anew"
    )


def reattached_target(payload: RegisterRequest, current: Target, api_key: str | None) -> Target:
    """What a re-attach probes: the body's fields where it sent them, the registration's
    otherwise (`api_key`: the body's, revealed to the redactor, when it sent one)."""
    sent = payload.model_fields_set
    model = payload.model_name if "model_name" in sent else current.model_name
    backend_model = payload.backend_model if "backend_model" in sent else current.backend_model
    return Target(
        payload.endpoint_url,
        api_key if "api_key" in sent else current.api_key,
        model,
        backend_model if model is not None else None,
    )


def change_of(payload: RegisterRequest) -> UpdateRequest:
    """The lease body as an update: the fields it sent replace the registration's."""
    sent = payload.model_fields_set - {"claim"}  # a claim is no field of the registration
    return UpdateRequest.model_validate(payload.model_dump(include=sent))


def reattach(
    database: Database,
    token: str,
    change: UpdateRequest,
    probe: ProbeResult,
    seconds: float,
    claim: bool = False,
) -> Lease:
    """The body applied, the probe recorded, active again, not draining, leased: one
    transaction, refused if a deregistration revoked the token meanwhile."""
    now = utcnow()
    with database.writing(durable=True) as session:
        server = _by_token(session, token)
        if server is None:
            raise PermissionDenied("this management token manages no registration")
        revoker = stored_forms(token)[server.management_token_hash or ""]
        if revoker is not None:
            raise revoked(revoker)
        registrations.apply_update(session, server, change, probe, admin=False)
        if claim and server.model_name is not None:
            names.claim(session, server.model_name, server, admin=False)
        server.is_active, server.deregistered_at, server.draining = True, None, False
        server.lease_connected_at = server.lease_heartbeat_at = now
        server.lease_expires_at = now + timedelta(seconds=seconds)
        return Lease(server.id, now)


def _held(server: ModelServer | None, lease: Lease) -> bool:
    return server is not None and server.lease_connected_at == lease.connected_at


def lease_state(database: Database, lease: Lease) -> LeaseState | None:
    """What the host should hear of its server; None when the lease is over
    (deregistered, expired, or a newer lease took the registration)."""
    with database.reading() as session:
        server = session.get(ModelServer, lease.registration_id)
        if server is None or not server.is_active or not _held(server, lease):
            return None
        return LeaseState(
            server.id,
            server.health_status,
            server.draining,
            server.last_error,
            server.status_changed_at,
        )


def acknowledge(database: Database, registration_id: str, seconds: float) -> datetime | None:
    """The agent answered a heartbeat: its lease pushed out (None: no lease is open)."""
    now = utcnow()
    with database.writing() as session:
        server = session.get(ModelServer, registration_id)
        if server is None or not server.is_active or server.lease_connected_at is None:
            return None
        server.lease_heartbeat_at = now
        server.lease_expires_at = now + timedelta(seconds=seconds)
        return server.lease_expires_at


def release(database: Database, lease: Lease, grace_seconds: float) -> None:
    """The stream ended: routable for the grace, then healthd deactivates it (unless a
    newer lease holds the registration already)."""
    now = utcnow()
    with database.writing() as session:
        server = session.get(ModelServer, lease.registration_id)
        if server is not None and _held(server, lease):
            server.lease_connected_at = None
            server.lease_expires_at = now + timedelta(seconds=grace_seconds)
    log.info("lease released", registration_id=lease.registration_id, grace_seconds=grace_seconds)


@asynccontextmanager
async def released(database: Database, lease: Lease, grace: float) -> AsyncIterator[None]:
    """The lease, released however its stream ends. The write runs in a thread (it may
    wait for the database lock) and is shielded: a stream cancelled because the host
    left still releases, without blocking the event loop."""
    try:
        yield
    finally:
        await asyncio.shield(asyncio.to_thread(release, database, lease, grace))


def lease_streams_end() -> dict[str, asyncio.Event]:
    """The lifespan state that lets lease streams hear of the worker's shutdown."""
    return {LEASE_STREAMS_END: asyncio.Event()}


def end_lease_streams(state: Mapping[str, object]) -> None:
    """The worker's graceful shutdown began: every lease stream ends now."""
    event = state.get(LEASE_STREAMS_END)
    if isinstance(event, asyncio.Event):
        event.set()


async def _ends_within(ending: asyncio.Event | None, seconds: float) -> bool:
    if ending is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(ending.wait(), seconds)
    except TimeoutError:
        return False
    return True


def _event(kind: str, data: Mapping[str, object]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def _stream(
    context: GatewayContext, lease: Lease, shown_token: str | None, ending: asyncio.Event | None
) -> AsyncIterator[bytes]:
    heartbeat, grace = (
        context.settings.lease_heartbeat_seconds,
        context.settings.lease_grace_seconds,
    )
    first: dict[str, object] = {
        "registration_id": lease.registration_id,
        "page": f"/servers/{lease.registration_id}",
    }
    if shown_token is not None:
        first["management_token"] = shown_token
    async with released(context.database, lease, grace):
        yield _event("registered", first)
        while True:
            state = await asyncio.to_thread(lease_state, context.database, lease)
            if state is None:
                yield _event("ended", {"reason": "deregistered, expired, or held by a newer lease"})
                return
            yield _event(
                "heartbeat",
                {"registration_id": state.registration_id, "health": state.health,
                 "draining": state.draining, "reason": state.reason,
                 "since": state.since.isoformat() if state.since else None},
            )  # fmt: skip
            if await _ends_within(ending, heartbeat):
                reason = "the gateway is shutting down; reconnect (the grace keeps the server)"
                yield _event("reconnect", {"reason": reason})
                return


async def _reattach(
    context: GatewayContext, payload: RegisterRequest, token: str, seconds: float
) -> Lease:
    holder = await asyncio.to_thread(holder_of, context.database, token)
    if holder is None:
        raise PermissionDenied("this management token manages no registration")
    if holder.revoked_by is not None:
        raise revoked(holder.revoked_by)
    target = reattached_target(payload, holder.target, revealed_key(context, payload))
    await check_notify_url(context, payload.notify_url)  # the guard, as on every other path
    probe = await probe_target(context, target.endpoint_url, target.api_key)
    require_listed(probe, target.model_name, target.backend_model)
    change = within_limits(context, Role.HOST, change_of(payload))
    return await asyncio.to_thread(
        reattach, context.database, token, change, probe, seconds, payload.claim
    )


async def open_lease(request: Request) -> Response:
    context = context_of(request)
    settings = context.settings
    seconds = settings.lease_heartbeat_seconds + settings.lease_grace_seconds
    payload = await parse_body(request, RegisterRequest)
    token = request.headers.get("x-management-token")
    shown_token: str | None = None
    if token:
        lease = await _reattach(context, payload, token, seconds)
    else:
        server, shown_token = await register_new(context, payload, role_of(request), seconds)
        assert server.lease_connected_at is not None  # leased in the same transaction
        lease = Lease(server.registration_id, server.lease_connected_at)
    await context.registry_written()
    log.info("lease opened", registration_id=lease.registration_id, new=shown_token is not None)
    ending = request.scope.get("state", {}).get(LEASE_STREAMS_END)
    return StreamingResponse(
        _stream(context, lease, shown_token, ending),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def acknowledge_heartbeat(request: Request) -> Response:
    context = context_of(request)
    registration_id = request.path_params["registration_id"]
    settings = context.settings
    seconds = settings.lease_heartbeat_seconds + settings.lease_grace_seconds
    expires = await asyncio.to_thread(acknowledge, context.database, registration_id, seconds)
    if expires is None:
        raise NotFound(f"no lease is open for registration {registration_id!r}")
    return json_response(
        {"registration_id": registration_id, "lease_expires_at": expires.isoformat()}
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
                "re-attaches its registration (the body applied, probed first). SSE: "
                "`registered`, then `heartbeat` every LEASE_HEARTBEAT_SECONDS, each to be "
                "acknowledged; `reconnect` when the gateway shuts down. When the stream ends "
                "the registration stays routable for LEASE_GRACE_SECONDS, then is deactivated.",
                tag="admin",
                request_model=RegisterRequest,
                responses={
                    200: "the lease's event stream",
                    400: "invalid registration",
                    403: "a token that manages nothing, or of a deregistered registration",
                    503: "the server failed its probe",
                },
                needs_admin_key=True,
            ),
        ),
        DocumentedRoute(
            "/leases/{registration_id}/ack",
            acknowledge_heartbeat,
            method="POST",
            operation=Operation(
                summary="Acknowledge a lease's heartbeat: the lease is renewed",
                description="The registration's X-Management-Token (or the admin key). "
                "Only acknowledgements renew a lease: an agent that stops answering loses "
                "it within LEASE_HEARTBEAT_SECONDS + LEASE_GRACE_SECONDS.",
                tag="admin",
                responses={200: "renewed", 404: "no lease is open", 403: "another's token"},
                needs_admin_key=True,
            ),
        ),
    ]
