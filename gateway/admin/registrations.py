"""Writes of registrations for the admin API (blocking; run in a thread); their reads
are in server_views.py.

Deregistration is soft: the row and its history stay, `is_active` turns false,
and the same backend can register again later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.admin.schemas import (
    RegisterRequest,
    ServerOut,
    UpdateRequest,
)
from gateway.admin.server_views import server_out
from gateway.admin.tokens import Revoker, revoked_hash, token_hash
from gateway.ownership import names
from gateway.routing.claims import read_claims
from shared.db import Database
from shared.errors import Conflict, NotFound
from shared.models import (
    CheckOutcome,
    CheckRequest,
    HealthCheck,
    HealthStatus,
    ModelServer,
    NotifyOutbox,
    RegistrationSource,
    utcnow,
)
from shared.probe import ProbeResult

CONFIGURED_SERVER = (
    "this server comes from the configuration file; change or remove it there "
    "(BACKENDS_FILE, BACKENDS or UPSTREAM) and reload the gateway (SIGHUP)"
)


def _apply_probe(server: ModelServer, probe: ProbeResult) -> HealthCheck:
    """Record a successful registration-time probe on the row and in the history."""
    now = utcnow()
    new_status = HealthStatus.HEALTHY.value if probe.healthy else HealthStatus.UNHEALTHY.value
    if server.health_status != new_status:
        server.status_changed_at = now
    server.health_status = new_status
    server.last_checked_at = now
    server.last_response_time_ms = probe.response_time_ms
    server.consecutive_failures = 0 if probe.healthy else server.consecutive_failures + 1
    server.last_error = probe.error
    server.reported_models = list(probe.models)
    server.model_details = probe.details
    return HealthCheck(
        server_id=server.id,
        checked_at=now,
        status=(CheckOutcome.SUCCESS if probe.healthy else CheckOutcome.FAILURE).value,
        response_time_ms=probe.response_time_ms,
        http_status=probe.http_status,
        error_message=probe.error,
    )


def _active_duplicate(
    session: Session, model_name: str | None, endpoint_url: str, exclude_id: str | None = None
) -> ModelServer | None:
    query = select(ModelServer).where(
        ModelServer.is_active.is_(True),
        ModelServer.model_name.is_(None)
        if model_name is None
        else ModelServer.model_name == model_name,
        ModelServer.endpoint_url == endpoint_url,
    )
    if exclude_id is not None:
        query = query.where(ModelServer.id != exclude_id)
    return session.scalars(query.limit(1)).first()


def _serving(model_name: str | None) -> str:
    return "for all its models" if model_name is None else f"for model {model_name!r}"


def token_hash_of(db: Database, server_id: str) -> str | None:
    """The stored hash of an active registration's management token (None: no such one)."""
    with db.reading() as session:
        return session.scalar(
            select(ModelServer.management_token_hash).where(
                ModelServer.id == server_id, ModelServer.is_active.is_(True)
            )
        )


def tell_host(session: Session, server: ModelServer, event: str, reason: str) -> None:
    """Ask healthd (through the database, in this transaction) to tell the server's host,
    if it gave a notify_url."""
    if server.notify_url:
        session.add(NotifyOutbox(server_id=server.id, event=event, reason=reason, at=utcnow()))


def registration_of_token(db: Database, token: str) -> str | None:
    """The active registration a management token manages (None: none)."""
    with db.reading() as session:
        return session.scalar(
            select(ModelServer.id).where(
                ModelServer.management_token_hash == token_hash(token),
                ModelServer.is_active.is_(True),
            )
        )


def set_draining(db: Database, server_id: str, draining: bool, by_admin: bool = False) -> ServerOut:
    """Drain (no new requests; those in flight finish) or resume a registration; the
    host hears of the admin's drain."""
    with db.writing(durable=True) as session:
        server = _get_active(session, server_id)
        if by_admin and draining and not server.draining:
            tell_host(session, server, "drained", "drained by the admin: no new requests")
        server.draining = draining
        server.updated_at = utcnow()
        session.flush()
        return server_out(server, claims=read_claims(session))


@dataclass(frozen=True)
class Naming:
    """How a registration's model names are owned: whether the admin asks (who may do
    anything), and whether a name's first registrant owns it (OPEN_MODEL_NAMES=false)."""

    admin: bool = True
    first_owns: bool = False


def already_registered(duplicate_id: str, serving: str) -> Conflict:
    """409 for a second registration of an endpoint, with the way out for a host that
    lost the token of the first."""
    return Conflict(
        f"this endpoint is already registered {serving} as {duplicate_id}; update that "
        "registration instead. If it is yours and you lost its management token, ask the "
        f"admin for a new one (POST /admin/servers/{duplicate_id}/token) and give it to "
        "`gateway-admin join --management-token`"
    )


def create_registration(
    db: Database,
    request: RegisterRequest,
    probe: ProbeResult,
    source: RegistrationSource = RegistrationSource.API,
    management_token_hash: str | None = None,
    lease_seconds: float | None = None,
    naming: Naming = Naming(),
) -> ServerOut:
    """Insert a registration that passed its probe, with that probe as its first check;
    `lease_seconds`: held by a lease from now on, in the same transaction."""
    with db.writing(durable=True) as session:
        duplicate = _active_duplicate(session, request.model_name, request.endpoint_url)
        if duplicate is not None:
            raise already_registered(duplicate.id, _serving(request.model_name))
        now = utcnow()
        server = ModelServer(
            model_name=request.model_name,
            backend_model=request.backend_model,
            source=source.value,
            management_token_hash=management_token_hash,
            draining=False,
            notify_url=request.notify_url,
            notify_format=request.notify_format,
            endpoint_url=request.endpoint_url,
            api_key=request.api_key.get_secret_value() if request.api_key else None,
            max_tokens=request.capabilities.max_tokens,
            context_length=request.capabilities.context_length,
            streaming_supported=request.capabilities.streaming,
            student_id=request.metadata.student_id,
            description=request.metadata.description,
            tags=sorted(set(request.tags)),
            priority=request.priority,
            weight=request.weight,
            max_concurrent=request.max_concurrent,
            health_status=HealthStatus.UNKNOWN.value,
            consecutive_failures=0,
            reported_models=[],
            is_active=True,
            registered_at=now,
            created_at=now,
            updated_at=now,
        )
        if lease_seconds is not None:
            server.lease_connected_at = server.lease_heartbeat_at = now
            server.lease_expires_at = now + timedelta(seconds=lease_seconds)
        session.add(server)
        session.flush()
        session.add(_apply_probe(server, probe))
        # Its one check so far passed: the metrics start from it (healthd keeps them).
        server.success_rate = 100.0
        server.uptime_percent = 100.0
        server.avg_response_time_ms = probe.response_time_ms
        _own_names(session, server, request.claim, naming)
        session.flush()
        return server_out(server, claims=read_claims(session))


def _own_names(session: Session, server: ModelServer, claim: bool, naming: Naming) -> None:
    """A new registration's names: refused if another owns the one it names, claimed if
    it asks (or, with OPEN_MODEL_NAMES=false, if it is their first registrant)."""
    names.check_named(session, server.model_name, server, naming.admin)
    if claim and server.model_name is not None:
        names.claim(session, server.model_name, server, admin=naming.admin)
    elif naming.first_owns:
        for model, _ in server.served_models():
            names.claim_if_first(session, model, server)


@dataclass(frozen=True)
class Target:
    """Where a registration points and what it serves, for checking an update before
    it is saved."""

    endpoint_url: str
    api_key: str | None
    model_name: str | None
    backend_model: str | None


def current_target(db: Database, server_id: str) -> Target:
    with db.reading() as session:
        server = _get_active(session, server_id)
        return Target(server.endpoint_url, server.api_key, server.model_name, server.backend_model)


def _get_active(session: Session, server_id: str) -> ModelServer:
    server = session.get(ModelServer, server_id)
    if server is None or not server.is_active:
        raise NotFound(f"no active registration with id {server_id!r}")
    return server


def update_registration(
    db: Database,
    server_id: str,
    request: UpdateRequest,
    probe: ProbeResult | None,
    admin: bool = True,
) -> ServerOut:
    """Apply the fields the client sent; `probe` is given when the target changed. A
    server from configuration is changed there: the next start or SIGHUP would undo it."""
    with db.writing(durable=True) as session:
        server = _get_active(session, server_id)
        if server.source == RegistrationSource.CONFIG.value:
            raise Conflict(CONFIGURED_SERVER)
        apply_update(session, server, request, probe, admin)
        return server_out(server, claims=read_claims(session))


def apply_update(
    session: Session,
    server: ModelServer,
    request: UpdateRequest,
    probe: ProbeResult | None,
    admin: bool = True,
) -> None:
    """The fields `request` carries, onto `server` (an update, or a lease's re-attach)."""
    sent = request.model_fields_set
    if "model_name" in sent:
        server.model_name = request.model_name
        names.check_named(session, request.model_name, server, admin)
        if request.model_name is None:
            server.backend_model = None
    if "backend_model" in sent:
        server.backend_model = request.backend_model
    if request.endpoint_url is not None:
        server.endpoint_url = request.endpoint_url
    if "api_key" in sent:
        server.api_key = request.api_key.get_secret_value() if request.api_key else None
    if request.capabilities is not None:
        capabilities = request.capabilities
        if "max_tokens" in capabilities.model_fields_set:
            server.max_tokens = capabilities.max_tokens
        if "context_length" in capabilities.model_fields_set:
            server.context_length = capabilities.context_length
        if capabilities.streaming is not None:
            server.streaming_supported = capabilities.streaming
    if request.metadata is not None:
        for field in request.metadata.model_fields_set:
            setattr(server, field, getattr(request.metadata, field))
    if request.tags is not None:
        server.tags = sorted(set(request.tags))
    if request.priority is not None:
        server.priority = request.priority
    if request.weight is not None:
        server.weight = request.weight
    if "max_concurrent" in sent:
        server.max_concurrent = request.max_concurrent
    if "notify_url" in sent:
        server.notify_url = request.notify_url
    if "notify_format" in sent:
        server.notify_format = request.notify_format
    duplicate = _active_duplicate(session, server.model_name, server.endpoint_url, server.id)
    if duplicate is not None:
        raise Conflict(
            f"this endpoint is already registered {_serving(server.model_name)} as {duplicate.id}"
        )
    if probe is not None:
        session.add(_apply_probe(server, probe))
    server.updated_at = utcnow()
    session.flush()


def deactivate_registration(db: Database, server_id: str, by: Revoker = Revoker.ADMIN) -> None:
    """Soft-delete: routing stops at once, the history stays. Final: the management
    token is revoked, so a host's agent cannot lease the registration back. A server
    from configuration would come back at the next start (or SIGHUP): refused, so the
    answer is not a lie."""
    with db.writing(durable=True) as session:
        server = _get_active(session, server_id)
        if server.source == RegistrationSource.CONFIG.value:
            raise Conflict(CONFIGURED_SERVER)
        now = utcnow()
        server.is_active = False
        server.deregistered_at = now
        server.updated_at = now
        server.lease_connected_at = server.lease_expires_at = None
        if server.management_token_hash is not None:
            server.management_token_hash = revoked_hash(server.management_token_hash, by)
        if by is Revoker.ADMIN:
            tell_host(session, server, "deregistered", "deregistered by the admin")


def request_check(db: Database, server_id: str) -> None:
    """Ask healthd (through the database) to probe this backend now."""
    with db.writing() as session:
        _get_active(session, server_id)
        session.add(CheckRequest(server_id=server_id, requested_at=utcnow()))
