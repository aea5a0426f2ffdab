"""The admin API under /admin: register, update, deregister and check backends (listing
and showing them: server_views.py).

Handlers parse and answer; database work runs in a thread (it blocks), and the
probe of a new or changed target runs before anything is written.
"""

from __future__ import annotations

from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.admin import registrations
from gateway.admin.auth import Role, deregistered_by, role_of
from gateway.admin.registrations import Naming
from gateway.admin.schemas import (
    CheckRequested,
    DeregisterResponse,
    ProbeRequest,
    ProbeResponse,
    RegisterRequest,
    RegisterResponse,
    ServerOut,
    UpdateRequest,
)
from gateway.admin.tokens import new_token, token_hash
from gateway.context import GatewayContext, context_of
from gateway.json_bodies import json_response, parse_body
from gateway.openapi import DocumentedRoute, Operation
from gateway.ownership.limits import HostLimits
from shared.errors import InvalidRequest, ServiceUnavailable
from shared.logging import get_logger
from shared.models import RegistrationSource
from shared.probe import ProbeResult, missing_model, probe_backend
from shared.urls import BadBackendURL, UnresolvableHost, check_backend_url

log = get_logger("registry")

_AUTH_ERRORS = {401: "X-API-Key header missing", 403: "X-API-Key is wrong"}


def revealed_key(
    context: GatewayContext, payload: RegisterRequest | ProbeRequest | UpdateRequest
) -> str | None:
    """The backend key a request carries, in clear; known to the redactor before any use."""
    api_key = payload.api_key.get_secret_value() if payload.api_key else None
    context.redactor.add_secret(api_key)
    return api_key


async def probe_target(
    context: GatewayContext, endpoint_url: str, api_key: str | None
) -> ProbeResult:
    """Check where a URL points, then probe it; raise the error the client should see."""
    try:
        await check_backend_url(
            endpoint_url,
            allow_private=context.settings.allow_private_backends,
            resolver=context.resolver,
        )
    except BadBackendURL as error:
        raise InvalidRequest(str(error), param="endpoint_url") from None
    except UnresolvableHost as error:
        raise ServiceUnavailable(f"the backend is unreachable: {error}") from None
    result = await probe_backend(
        context.probe_transport(),
        endpoint_url,
        api_key,
        timeout=context.settings.health_check_timeout_seconds,
    )
    if not result.healthy:
        raise ServiceUnavailable(
            f"the backend failed its health check (GET /v1/models): {result.error}"
        )
    return result


async def check_notify_url(context: GatewayContext, url: str | None) -> None:
    """A webhook passes the address guard when it is given, as healthd's sends will."""
    if url is None:
        return
    try:
        await check_backend_url(
            url,
            allow_private=context.settings.allow_private_backends,
            resolver=context.resolver,
            field="notify_url",
        )
    except BadBackendURL as error:
        raise InvalidRequest(str(error), param="notify_url") from None
    except UnresolvableHost as error:
        raise InvalidRequest(f"notify_url: {error}", param="notify_url") from None


def require_listed(probe: ProbeResult, model_name: str | None, backend_model: str | None) -> None:
    """400 unless the backend lists the model a registration names (by the backend's own
    name when `backend_model` is set): else every request would get "no such model"."""
    checked = missing_model(probe, backend_model or model_name)
    if not checked.healthy:
        param = "backend_model" if backend_model else "model_name"
        hint = (
            "; register without model_name to serve every model it lists, or set "
            "backend_model to the backend's name for it"
        )
        raise InvalidRequest(f"{checked.error}{hint}", param=param)


def naming_for(context: GatewayContext, role: Role) -> Naming:
    return Naming(admin=role is Role.ADMIN, first_owns=not context.settings.open_model_names)


Body = TypeVar("Body", RegisterRequest, UpdateRequest)


def within_limits(context: GatewayContext, role: Role, payload: Body) -> Body:
    """A host's body, refused (403) beyond the admin's limits on weight and priority; a
    new registration that sent no priority gets the best tier a host may use."""
    if role is Role.ADMIN:
        return payload
    settings = context.settings
    limits = HostLimits(settings.host_max_weight, settings.admin_priority_tiers)
    sent = payload.model_fields_set
    limits.check(
        weight=payload.weight if "weight" in sent else None,
        priority=payload.priority if "priority" in sent else None,
    )
    if isinstance(payload, RegisterRequest) and "priority" not in sent:
        priority = limits.default_priority(None)
        if priority is not None:
            return payload.model_copy(update={"priority": priority})
    return payload


async def register_new(
    context: GatewayContext,
    payload: RegisterRequest,
    role: Role,
    lease_seconds: float | None = None,
) -> tuple[ServerOut, str]:
    """Probe and store a new registration; returns it with its management token (shown
    once: by the 201 of POST /admin/register, or a lease's `registered` event, whose
    lease is taken in the same transaction)."""
    payload = within_limits(context, role, payload)
    api_key = revealed_key(context, payload)
    await check_notify_url(context, payload.notify_url)
    probe = await probe_target(context, payload.endpoint_url, api_key)
    require_listed(probe, payload.model_name, payload.backend_model)
    token = new_token()
    context.redactor.add_secret(token)
    server = await run_in_threadpool(
        registrations.create_registration,
        context.database,
        payload,
        probe,
        RegistrationSource.API,
        token_hash(token),
        lease_seconds,
        naming_for(context, role),
    )
    return server, token


async def register(request: Request) -> Response:
    context = context_of(request)
    payload = await parse_body(request, RegisterRequest)
    server, token = await register_new(context, payload, role_of(request))
    await context.registry_written()
    log.info(
        "server registered",
        registration_id=server.registration_id,
        model=server.model_name,
        endpoint_url=server.endpoint_url,
        api_key_set=server.api_key_set,
        student_id=server.metadata.student_id,
    )
    return json_response(
        RegisterResponse(
            registration_id=server.registration_id,
            health_status=server.health_status,
            reported_models=server.reported_models,
            served_models=server.served_models,
            management_token=token,
        ),
        status=201,
    )


async def test_connection(request: Request) -> Response:
    context = context_of(request)
    payload = await parse_body(request, ProbeRequest)
    api_key = revealed_key(context, payload)
    probe = await probe_target(context, payload.endpoint_url, api_key)
    return json_response(
        ProbeResponse(response_time_ms=probe.response_time_ms, reported_models=list(probe.models))
    )


async def update(request: Request) -> Response:
    context = context_of(request)
    server_id = request.path_params["registration_id"]
    payload = await parse_body(request, UpdateRequest)
    if not payload.model_fields_set:
        raise InvalidRequest("the update is empty; send at least one field to change")
    role = role_of(request)
    within_limits(context, role, payload)
    await check_notify_url(context, payload.notify_url)
    current = await run_in_threadpool(registrations.current_target, context.database, server_id)
    new_url = payload.endpoint_url or current.endpoint_url
    if "api_key" in payload.model_fields_set:
        new_key = revealed_key(context, payload)
    else:
        new_key = current.api_key
    sent = payload.model_fields_set
    new_model = payload.model_name if "model_name" in sent else current.model_name
    new_backend_model = (
        payload.backend_model
        if "backend_model" in sent
        else (current.backend_model if new_model is not None else None)
    )
    if new_backend_model is not None and new_model is None:
        raise InvalidRequest(
            "backend_model needs model_name: the name clients use for it", param="backend_model"
        )
    probe = None
    if (new_url, new_key, new_model, new_backend_model) != (
        current.endpoint_url,
        current.api_key,
        current.model_name,
        current.backend_model,
    ):
        probe = await probe_target(context, new_url, new_key)
        require_listed(probe, new_model, new_backend_model)
    server = await run_in_threadpool(
        registrations.update_registration,
        context.database,
        server_id,
        payload,
        probe,
        role is Role.ADMIN,
    )
    await context.registry_written()
    log.info(
        "server updated",
        registration_id=server_id,
        fields=sorted(payload.model_fields_set),
        reprobed=probe is not None,
    )
    return json_response(server)


async def deregister(request: Request) -> Response:
    context = context_of(request)
    server_id = request.path_params["registration_id"]
    await run_in_threadpool(
        registrations.deactivate_registration,
        context.database,
        server_id,
        deregistered_by(request.headers),
    )
    await context.registry_written()
    log.info("server deregistered", registration_id=server_id)
    return json_response(DeregisterResponse(registration_id=server_id))


async def force_check(request: Request) -> Response:
    context = context_of(request)
    server_id = request.path_params["registration_id"]
    await run_in_threadpool(registrations.request_check, context.database, server_id)
    log.info("health check requested", registration_id=server_id)
    return json_response(CheckRequested(registration_id=server_id), status=202)


def admin_routes() -> list[DocumentedRoute]:
    """The routes mounted at /admin (the key check is the mount's middleware)."""
    return [
        DocumentedRoute(
            "/register",
            register,
            method="POST",
            operation=Operation(
                summary="Register a backend",
                description="Validates the request, refuses non-public addresses (after DNS "
                "resolution), probes GET {endpoint_url}/v1/models, then stores the registration.",
                tag="admin",
                request_model=RegisterRequest,
                response_model=RegisterResponse,
                success_status=201,
                responses={
                    201: "registered and healthy",
                    400: "invalid request or forbidden address",
                    403: "a model name another owner claimed, or beyond a host's limits",
                    409: "this endpoint is already registered for this model",
                    413: "body over 1 MiB",
                    503: "the backend failed its probe",
                    **_AUTH_ERRORS,
                },
                needs_admin_key=True,
            ),
        ),
        DocumentedRoute(
            "/probe",
            test_connection,
            method="POST",
            operation=Operation(
                summary="Test a backend without registering it",
                description="The checks of a registration (address guard, GET /v1/models); "
                "nothing is stored. The web form's 'Test connection' uses it.",
                tag="admin",
                request_model=ProbeRequest,
                response_model=ProbeResponse,
                responses={
                    200: "reachable and healthy",
                    400: "invalid request or forbidden address",
                    503: "the backend failed the probe",
                    **_AUTH_ERRORS,
                },
                needs_admin_key=True,
            ),
        ),
        DocumentedRoute(
            "/register/{registration_id}",
            update,
            method="PUT",
            operation=Operation(
                summary="Update a registration",
                description="Absent fields keep their value. A new URL or key is probed first.",
                tag="admin",
                request_model=UpdateRequest,
                response_model=ServerOut,
                responses={
                    200: "updated",
                    400: "invalid request",
                    404: "no such active registration",
                    409: "conflicts with another registration",
                    503: "the new target failed its probe",
                    **_AUTH_ERRORS,
                },
                needs_admin_key=True,
            ),
        ),
        DocumentedRoute(
            "/register/{registration_id}",
            deregister,
            method="DELETE",
            operation=Operation(
                summary="Deregister a backend (soft delete)",
                tag="admin",
                response_model=DeregisterResponse,
                responses={
                    200: "deregistered",
                    404: "no such active registration",
                    409: "a server from configuration: remove it there",
                    **_AUTH_ERRORS,
                },
                needs_admin_key=True,
            ),
        ),
        DocumentedRoute(
            "/servers/{registration_id}/check",
            force_check,
            method="POST",
            operation=Operation(
                summary="Ask healthd to probe this backend now",
                description="Written to the database; healthd takes it within about a second. "
                "Watch GET /admin/servers/{id} for the result.",
                tag="admin",
                response_model=CheckRequested,
                success_status=202,
                responses={202: "requested", 404: "no such active registration", **_AUTH_ERRORS},
                needs_admin_key=True,
            ),
        ),
    ]
