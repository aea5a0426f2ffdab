"""`GET /admin/servers` and `GET /admin/servers/{id}`: the public view of a registration
(its key only as `api_key_set`), listed or one with its recent checks. The reads block
and run in a thread."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.admin.auth import own_registration
from gateway.admin.schemas import (
    Capabilities,
    HealthCheckOut,
    ModelNames,
    OwnerMetadata,
    ReportedLoad,
    ServerDetail,
    ServerOut,
    Usage,
    WithheldModel,
)
from gateway.context import context_of
from gateway.json_bodies import json_response
from gateway.openapi import DocumentedRoute, Operation, QueryParameter
from gateway.routing.claims import Claim, read_claims, withheld
from shared.db import Database
from shared.errors import InvalidRequest, NotFound
from shared.models import (
    BackendUsage,
    CheckOutcome,
    HealthCheck,
    HealthStatus,
    ModelServer,
    RegistrationSource,
    UTCDateTime,
)

RECENT_CHECKS = 20


def usage_out(row: BackendUsage | None) -> Usage:
    if row is None:
        return Usage()
    return Usage(
        requests=row.requests_total,
        failures=row.failures_total,
        prompt_tokens=row.prompt_tokens_total,
        completion_tokens=row.completion_tokens_total,
        mean_latency_ms=(
            round(row.latency_ms_total / row.requests_total, 2) if row.requests_total else None
        ),
        last_request_at=row.last_request_at,
    )


def server_out(
    server: ModelServer,
    latest_check: datetime | None = None,
    usage: BackendUsage | None = None,
    claims: Mapping[str, Claim] | None = None,
) -> ServerOut:
    """The public view of a registration (its key only as `api_key_set`), with the
    models it offers and may not serve (`claims`: every owned name).

    healthd rewrites the server row only when something changed, so the last
    check time comes from the history when that is newer.
    """
    claims = claims or {}
    offered = [model for model, _ in server.served_models()]
    held_back = withheld(claims, server.id, offered)
    last_checked = server.last_checked_at
    if latest_check is not None and (last_checked is None or latest_check > last_checked):
        last_checked = latest_check
    return ServerOut(
        registration_id=server.id,
        model_name=server.model_name,
        backend_model=server.backend_model,
        served_models=[model for model in offered if model not in held_back],
        withheld_models=[WithheldModel(model=m, reason=r) for m, r in held_back.items()],
        owned_models=sorted(m for m, claim in claims.items() if claim.owner_id == server.id),
        model_faults=dict(server.model_faults or {}),
        canaries_sent=server.canaries_sent or 0,
        model_mismatches={
            model: ModelNames.model_validate(counts)
            for model, counts in (server.model_mismatches or {}).items()
            if isinstance(counts, dict)
        },
        source=RegistrationSource(server.source).value,
        draining=server.draining,
        notify_url=server.notify_url,
        notify_format=server.notify_format or "json",
        lease_connected_at=server.lease_connected_at,
        lease_heartbeat_at=server.lease_heartbeat_at,
        lease_expires_at=server.lease_expires_at,
        endpoint_url=server.endpoint_url,
        api_key_set=bool(server.api_key),
        capabilities=Capabilities(
            max_tokens=server.max_tokens,
            context_length=server.context_length,
            streaming=server.streaming_supported,
        ),
        metadata=OwnerMetadata(student_id=server.student_id, description=server.description),
        tags=list(server.tags or []),
        priority=server.priority,
        weight=server.weight,
        max_concurrent=server.max_concurrent,
        health_status=HealthStatus(server.health_status).value,
        last_checked_at=last_checked,
        status_changed_at=server.status_changed_at,
        consecutive_failures=server.consecutive_failures,
        last_error=server.last_error,
        last_response_time_ms=server.last_response_time_ms,
        reported_models=list(server.reported_models or []),
        success_rate=server.success_rate,
        avg_response_time_ms=server.avg_response_time_ms,
        uptime_percent=server.uptime_percent,
        is_active=server.is_active,
        registered_at=server.registered_at,
        updated_at=server.updated_at,
        deregistered_at=server.deregistered_at,
        usage=usage_out(usage),
    )


def _check_out(check: HealthCheck) -> HealthCheckOut:
    return HealthCheckOut(
        checked_at=check.checked_at,
        status=CheckOutcome(check.status).value,
        response_time_ms=check.response_time_ms,
        http_status=check.http_status,
        error_message=check.error_message,
    )


def read_servers(
    db: Database,
    *,
    include_inactive: bool = False,
    model_name: str | None = None,
    health_status: str | None = None,
    student_id: str | None = None,
) -> list[ServerOut]:
    """Registrations, newest first, filtered as asked."""
    query = select(ModelServer).order_by(ModelServer.registered_at.desc())
    if not include_inactive:
        query = query.where(ModelServer.is_active.is_(True))
    if model_name:
        # Named, or serving every model its backend lists (filtered below).
        query = query.where(
            (ModelServer.model_name == model_name) | ModelServer.model_name.is_(None)
        )
    if health_status:
        query = query.where(ModelServer.health_status == health_status)
    if student_id:
        query = query.where(ModelServer.student_id == student_id)
    with db.reading() as session:
        rows: Sequence[ModelServer] = session.scalars(query).all()
        if model_name:
            rows = [row for row in rows if any(m == model_name for m, _ in row.served_models())]
        latest = dict(
            session.execute(
                select(
                    HealthCheck.server_id, func.max(HealthCheck.checked_at, type_=UTCDateTime())
                ).group_by(HealthCheck.server_id)
            ).all()
        )
        usage = {row.server_id: row for row in session.scalars(select(BackendUsage))}
        claims = read_claims(session)
        return [server_out(row, latest.get(row.id), usage.get(row.id), claims) for row in rows]


def read_server(db: Database, server_id: str) -> ServerDetail:
    """One registration (active or not) with its last 20 checks."""
    with db.reading() as session:
        server = session.get(ModelServer, server_id)
        if server is None:
            raise NotFound(f"no registration with id {server_id!r}")
        checks = session.scalars(
            select(HealthCheck)
            .where(HealthCheck.server_id == server_id)
            .order_by(HealthCheck.checked_at.desc(), HealthCheck.id.desc())
            .limit(RECENT_CHECKS)
        ).all()
        latest = checks[0].checked_at if checks else None
        return ServerDetail(
            **server_out(
                server, latest, session.get(BackendUsage, server_id), read_claims(session)
            ).model_dump(),
            recent_checks=[_check_out(c) for c in checks],
        )


_AUTH_ERRORS = {401: "X-API-Key header missing", 403: "X-API-Key is wrong"}


_STATUS_FILTERS = {"healthy", "unhealthy", "unknown"}


async def list_servers(request: Request) -> Response:
    """Every registration for the admin; a management token's own one, for its holder."""
    context = context_of(request)
    own = own_registration(request)
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in _STATUS_FILTERS:
        raise InvalidRequest("status must be healthy, unhealthy or unknown", param="status")
    include_inactive = params.get("include_inactive", "false").lower()
    if include_inactive not in ("true", "false", "1", "0"):
        raise InvalidRequest("include_inactive must be true or false", param="include_inactive")
    servers = await run_in_threadpool(
        lambda: read_servers(
            context.database,
            include_inactive=include_inactive in ("true", "1"),
            model_name=params.get("model") or None,
            health_status=status,
            student_id=params.get("student_id") or None,
        )
    )
    if own is not None:
        servers = [server for server in servers if server.registration_id == own]
    return json_response(servers)


async def show_server(request: Request) -> Response:
    context = context_of(request)
    detail = await run_in_threadpool(
        read_server, context.database, request.path_params["registration_id"]
    )
    if context.proxy is not None:
        load = context.proxy.scraper.describe(detail.registration_id)
        detail.reported_load = None if load is None else ReportedLoad.model_validate(load)
    return json_response(detail)


def server_routes() -> list[DocumentedRoute]:
    """The read routes mounted at /admin (the key check is the mount's middleware)."""
    return [
        DocumentedRoute(
            "/servers",
            list_servers,
            method="GET",
            operation=Operation(
                summary="List registrations with their health",
                tag="admin",
                response_model=ServerOut,
                response_is_list=True,
                query=(
                    QueryParameter("model", "only this model name"),
                    QueryParameter("status", "healthy, unhealthy or unknown"),
                    QueryParameter("student_id", "only this owner"),
                    QueryParameter("include_inactive", "also deregistered ones", "boolean"),
                ),
                responses={
                    200: "registrations, newest first",
                    400: "bad filter",
                    **_AUTH_ERRORS,
                },
                needs_admin_key=True,
            ),
        ),
        DocumentedRoute(
            "/servers/{registration_id}",
            show_server,
            method="GET",
            operation=Operation(
                summary="One registration with its last 20 health checks",
                tag="admin",
                response_model=ServerDetail,
                responses={
                    200: "the registration",
                    404: "no such registration",
                    **_AUTH_ERRORS,
                },
                needs_admin_key=True,
            ),
        ),
    ]
