"""Drain: take a backend out of routing gently (before a restart), and put it back.

No new requests go to a draining backend; those in flight finish (the proxy
never cuts a request because of a drain). The admin key or the registration's
management token may do it; `draining` shows in the API, CLI and dashboard.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.admin import registrations
from gateway.admin.auth import Role, role_of
from gateway.admin.schemas import ServerOut
from gateway.context import context_of
from gateway.json_bodies import json_response
from gateway.openapi import DocumentedRoute, Operation
from shared.logging import get_logger

log = get_logger("api")
_AUTH_ERRORS = {401: "no credentials", 403: "wrong key, or another registration's token"}


async def drain(request: Request) -> Response:
    return await _set_draining(request, True)


async def undrain(request: Request) -> Response:
    return await _set_draining(request, False)


async def _set_draining(request: Request, draining: bool) -> Response:
    context = context_of(request)
    server_id = request.path_params["registration_id"]
    server = await run_in_threadpool(
        registrations.set_draining,
        context.database,
        server_id,
        draining,
        role_of(request) is Role.ADMIN,
    )
    await context.registry_written()
    log.info("server drained" if draining else "server resumed", registration_id=server_id)
    return json_response(server)


def drain_routes() -> list[DocumentedRoute]:
    return [
        DocumentedRoute(
            f"/servers/{{registration_id}}/{action}",
            handler,
            method="POST",
            operation=Operation(
                summary=summary,
                description="Admin key, or this registration's X-Management-Token.",
                tag="admin",
                response_model=ServerOut,
                responses={200: "done", 404: "no such active registration", **_AUTH_ERRORS},
                needs_admin_key=True,
            ),
        )
        for action, handler, summary in (
            ("drain", drain, "Drain: no new requests; those in flight finish"),
            ("undrain", undrain, "Resume a drained backend"),
        )
    ]
