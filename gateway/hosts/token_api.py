"""`POST /admin/servers/{id}/token`: the admin issues a registration a new management
token, for a host that lost its own; the old one stops working at once.

The admin key only (a management token cannot reach this route: the middleware
admits tokens to their own registration's listed routes alone). The new token
is answered once, like the first; only its SHA-256 is stored.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.admin.tokens import new_token, token_hash
from gateway.context import context_of
from gateway.json_bodies import json_response
from gateway.openapi import DocumentedRoute, Operation
from shared.db import Database
from shared.errors import NotFound
from shared.logging import get_logger
from shared.models import ModelServer, utcnow

log = get_logger("registry")


class NewToken(BaseModel):
    registration_id: str
    management_token: str = Field(
        description="Shown this once; the registration's previous token no longer works."
    )


def replace_token(database: Database, server_id: str, new_hash: str) -> None:
    with database.writing(durable=True) as session:
        server = session.get(ModelServer, server_id)
        if server is None or not server.is_active:
            raise NotFound(f"no active registration with id {server_id!r}")
        server.management_token_hash = new_hash
        server.updated_at = utcnow()


async def issue_token(request: Request) -> Response:
    context = context_of(request)
    server_id = request.path_params["registration_id"]
    token = new_token()
    context.redactor.add_secret(token)
    await asyncio.to_thread(replace_token, context.database, server_id, token_hash(token))
    log.info("management token reissued", registration_id=server_id)
    return json_response(NewToken(registration_id=server_id, management_token=token))


def token_routes() -> list[DocumentedRoute]:
    return [
        DocumentedRoute(
            "/servers/{registration_id}/token",
            issue_token,
            method="POST",
            operation=Operation(
                summary="Issue a new management token (the admin, for a host that lost its own)",
                description="The old token stops working at once. The host gives the new one "
                "to `gateway-admin join --management-token`.",
                tag="admin",
                response_model=NewToken,
                responses={
                    200: "the new token, shown once",
                    401: "no admin key",
                    403: "not the admin",
                    404: "no such active registration",
                },
                needs_admin_key=True,
            ),
        )
    ]
