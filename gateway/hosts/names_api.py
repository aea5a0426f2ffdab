"""`/admin/models/{name}/...`: claim a model name, allow co-hosts, open it again.

A host acts with its registration's `X-Management-Token` (the middleware admits
a token the database knows; this finds which registration it manages), the
admin with the admin key: the admin may claim a name for itself or give it to a
registration (`{"registration_id": ...}`), and may undo any claim. The rules
are gateway/ownership/names.py's; each change is one transaction, and the
routing snapshot follows (a trigger bumps the registry's generation).
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.admin.auth import Role, role_of
from gateway.admin.leases import holder_of, revoked
from gateway.context import GatewayContext, context_of
from gateway.json_bodies import json_response, parse_json_object, validate
from gateway.openapi import DocumentedRoute, Operation
from gateway.ownership import names
from gateway.routing.claims import Claim
from shared.db import Database
from shared.errors import InvalidRequest, NotFound, PermissionDenied
from shared.logging import get_logger
from shared.models import ModelServer

log = get_logger("registry")


class ClaimRequest(BaseModel):
    registration_id: str | None = Field(
        None, description="The admin only: the registration that is to own the name."
    )


class CoHostRequest(BaseModel):
    registration_id: str = Field(description="The registration allowed to serve the name.")


class ClaimOut(BaseModel):
    model: str
    owner: str = Field(description="Its owner's student_id, or 'the admin'.")
    owner_registration_id: str | None
    co_hosts: list[str]
    status: str = "claimed"


def claim_out(claim: Claim) -> ClaimOut:
    return ClaimOut(
        model=claim.model,
        owner=claim.owner,
        owner_registration_id=claim.owner_id,
        co_hosts=sorted(claim.co_hosts),
    )


async def acting_registration(request: Request, context: GatewayContext) -> str | None:
    """The registration a host's token manages (None: the admin acts)."""
    if role_of(request) is Role.ADMIN:
        return None
    holder = await asyncio.to_thread(
        holder_of, context.database, request.headers.get("x-management-token", "")
    )
    if holder is None:
        raise PermissionDenied("this management token manages no registration")
    if holder.revoked_by is not None:
        raise revoked(holder.revoked_by)
    return holder.registration_id


def _claim(database: Database, model: str, owner_id: str | None, admin: bool) -> Claim:
    with database.writing(durable=True) as session:
        owner = None
        if owner_id is not None:
            owner = session.get(ModelServer, owner_id)
            if owner is None or not owner.is_active:
                raise NotFound(f"no active registration with id {owner_id!r}")
        return names.claim(session, model, owner, admin=admin)


def _open(database: Database, model: str, by: str | None) -> None:
    with database.writing(durable=True) as session:
        names.open_name(session, model, by, admin=by is None)


def _co_host(database: Database, model: str, co_host: str, by: str | None, allowed: bool) -> Claim:
    with database.writing(durable=True) as session:
        return names.set_co_host(session, model, co_host, by, admin=by is None, allowed=allowed)


async def claim(request: Request) -> Response:
    context = context_of(request)
    model = request.path_params["model"]
    by = await acting_registration(request, context)
    raw = await request.body()
    asked = validate(ClaimRequest, parse_json_object(raw)) if raw.strip() else ClaimRequest()
    if asked.registration_id is not None and by is not None:
        raise PermissionDenied("only the admin may claim a name for another registration")
    owner_id = asked.registration_id if by is None else by
    result = await asyncio.to_thread(_claim, context.database, model, owner_id, by is None)
    await context.registry_written()
    log.info("model name claimed", model=model, owner_registration_id=result.owner_id)
    return json_response(claim_out(result))


async def open_name(request: Request) -> Response:
    context = context_of(request)
    model = request.path_params["model"]
    by = await acting_registration(request, context)
    await asyncio.to_thread(_open, context.database, model, by)
    await context.registry_written()
    log.info("model name opened", model=model, by_registration_id=by)
    return json_response({"model": model, "status": "open"})


async def add_co_host(request: Request) -> Response:
    context = context_of(request)
    model = request.path_params["model"]
    by = await acting_registration(request, context)
    asked = validate(CoHostRequest, parse_json_object(await request.body()))
    result = await asyncio.to_thread(
        _co_host, context.database, model, asked.registration_id, by, True
    )
    await context.registry_written()
    log.info("co-host added", model=model, co_host=asked.registration_id)
    return json_response(claim_out(result))


async def remove_co_host(request: Request) -> Response:
    context = context_of(request)
    model = request.path_params["model"]
    co_host = request.path_params["registration_id"]
    if not co_host:
        raise InvalidRequest("name the co-host's registration id")
    by = await acting_registration(request, context)
    result = await asyncio.to_thread(_co_host, context.database, model, co_host, by, False)
    await context.registry_written()
    log.info("co-host removed", model=model, co_host=co_host)
    return json_response(claim_out(result))


_ERRORS = {
    401: "no credentials",
    403: "not the owner (or a name another owns)",
    404: "no such claim or registration",
}


def names_routes() -> list[DocumentedRoute]:
    return [
        DocumentedRoute(
            "/models/{model:path}/claim",
            claim,
            method="POST",
            operation=Operation(
                summary="Claim a model name: only its owner and co-hosts serve it",
                description="X-Management-Token: that registration owns the name (refused "
                "if others serve it now, or another owns it). Admin key: for the admin, or "
                "for `registration_id`, whatever serves it.",
                tag="admin",
                request_model=ClaimRequest,
                response_model=ClaimOut,
                responses={200: "claimed", 409: "other servers serve the name now", **_ERRORS},
                needs_admin_key=True,
            ),
        ),
        DocumentedRoute(
            "/models/{model:path}/open",
            open_name,
            method="POST",
            operation=Operation(
                summary="Open a claimed name to every server again (owner or admin)",
                tag="admin",
                responses={200: "open", **_ERRORS},
                needs_admin_key=True,
            ),
        ),
        DocumentedRoute(
            "/models/{model:path}/cohosts",
            add_co_host,
            method="POST",
            operation=Operation(
                summary="Allow another registration to serve an owned name (owner or admin)",
                tag="admin",
                request_model=CoHostRequest,
                response_model=ClaimOut,
                responses={200: "added", **_ERRORS},
                needs_admin_key=True,
            ),
        ),
        DocumentedRoute(
            "/models/{model:path}/cohosts/{registration_id}",
            remove_co_host,
            method="DELETE",
            operation=Operation(
                summary="Stop a co-host serving an owned name (owner or admin)",
                tag="admin",
                response_model=ClaimOut,
                responses={200: "removed", **_ERRORS},
                needs_admin_key=True,
            ),
        ),
    ]
