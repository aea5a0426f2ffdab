"""The groups admin API under /admin (admin key only): a group is a class's namespace,
the default limits of its keys and the models they may use.

`DELETE /admin/groups/{name}` is refused (409) while a key that is not revoked is
in the group: deleting it would silently change those keys' limits and models.
"""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.context import context_of
from gateway.json_bodies import json_response, parse_body
from gateway.openapi import DocumentedRoute
from gateway.people import group_store as store
from gateway.people.api import keys_operation
from gateway.people.checks import checked_limits
from gateway.people.schemas import GROUP_PATTERN, GroupDeleted, GroupOut, GroupSet
from shared.errors import InvalidRequest
from shared.logging import get_logger

log = get_logger("keys")


def _group_name(request: Request) -> str:
    name: str = request.path_params["name"]
    if not re.match(GROUP_PATTERN, name):
        raise InvalidRequest(
            "a group's name is 1 to 100 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit",
            param="name",
        )
    return name


async def set_group(request: Request) -> Response:
    context = context_of(request)
    name = _group_name(request)
    payload = await parse_body(request, GroupSet)
    limits = checked_limits(payload.limits, reservation=context.settings.token_reservation_default)
    group, created = await run_in_threadpool(
        store.set_group, context.database, name, limits, payload.models
    )
    await context.keys_written()
    log.info("client group set", group=name, created=created)
    return json_response(group, status=201 if created else 200)


async def list_groups(request: Request) -> Response:
    return json_response(await run_in_threadpool(store.read_groups, context_of(request).database))


async def show_group(request: Request) -> Response:
    group = await run_in_threadpool(
        store.read_group, context_of(request).database, _group_name(request)
    )
    return json_response(group)


async def delete_group(request: Request) -> Response:
    name = _group_name(request)
    context = context_of(request)
    await run_in_threadpool(store.delete_group, context.database, name)
    await context.keys_written()
    log.info("client group deleted", group=name)
    return json_response(GroupDeleted(name=name))


def group_routes() -> list[DocumentedRoute]:
    """The groups routes mounted at /admin."""
    return [
        DocumentedRoute(
            "/groups/{name}",
            set_group,
            method="PUT",
            operation=keys_operation(
                "Create a group, or replace its limits and models",
                {200: "replaced", 201: "created", 400: "invalid field (named in `param`)"},
                description="A key's own limits win over its group's, which win over the "
                "gateway's defaults; a key may use only models its group allows.",
                request_model=GroupSet,
                response_model=GroupOut,
            ),
        ),
        DocumentedRoute(
            "/groups",
            list_groups,
            method="GET",
            operation=keys_operation(
                "List groups, with how many keys each has",
                {200: "groups by name"},
                response_model=GroupOut,
                response_is_list=True,
            ),
        ),
        DocumentedRoute(
            "/groups/{name}",
            show_group,
            method="GET",
            operation=keys_operation(
                "One group, with how many keys it has",
                {200: "the group", 404: "no such group"},
                response_model=GroupOut,
            ),
        ),
        DocumentedRoute(
            "/groups/{name}",
            delete_group,
            method="DELETE",
            operation=keys_operation(
                "Delete a group (refused while keys that are not revoked are in it)",
                {200: "deleted", 404: "no such group", 409: "keys still use it"},
                response_model=GroupDeleted,
            ),
        ),
    ]
