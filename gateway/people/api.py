"""The keys admin API under /admin (admin key only: auth.py refuses registration keys and
management tokens): issue, list, show, change and revoke client keys.

Handlers parse and answer; database work runs in a thread. A key is generated here,
returned once in the 201, and never stored or shown again: only its prefix. It is
logged nowhere; should one reach a log line anyway, the redactor removes it by its
shape (`mvk_` and 16 or more characters: shared/logging.py), not by a list of the
keys this worker issued, whose one pattern would grow with every key.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.admission.access import default_limits
from gateway.admission.key_format import new_key as generate_key
from gateway.context import GatewayContext, context_of
from gateway.json_bodies import json_response, parse_body
from gateway.openapi import DocumentedRoute, Operation, QueryParameter
from gateway.people import store
from gateway.people.checks import key_changes, new_key
from gateway.people.schemas import (
    KeyBatch,
    KeyBatchCreated,
    KeyCreate,
    KeyCreated,
    KeyOut,
    KeyUpdate,
)
from shared.errors import InvalidRequest
from shared.logging import get_logger
from shared.models import utcnow

log = get_logger("keys")

AUTH_ERRORS = {
    401: "X-API-Key header missing",
    403: "not the admin key (registration keys and management tokens may not manage keys)",
}
MAX_PAGE = 5000


async def _create(
    context: GatewayContext, requests: list[KeyCreate], batch: bool
) -> list[KeyCreated]:
    settings = context.settings
    now = utcnow()
    checked = [
        new_key(
            request,
            generate_key(),
            reservation=settings.token_reservation_default,
            now=now,
            where=f"keys[{index}]." if batch else "",
        )
        for index, request in enumerate(requests)
    ]
    created = await run_in_threadpool(
        store.create_keys, context.database, checked, default_limits(settings)
    )
    await context.keys_written()
    for key in created:
        log.info(
            "client key issued", key_id=key.id, prefix=key.prefix, owner=key.owner, group=key.group
        )
    return created


async def create_key(request: Request) -> Response:
    context = context_of(request)
    payload = await parse_body(request, KeyCreate)
    (created,) = await _create(context, [payload], batch=False)
    return json_response(created, status=201)


async def create_keys(request: Request) -> Response:
    context = context_of(request)
    payload = await parse_body(request, KeyBatch)
    created = await _create(context, payload.keys, batch=True)
    return json_response(KeyBatchCreated(keys=created), status=201)


def _flag(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise InvalidRequest(f"{name} must be true or false", param=name)
    return lowered in ("true", "1")


def _count(value: str | None, name: str, default: int, highest: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or int(value) > highest:
        raise InvalidRequest(f"{name} must be a whole number from 0 to {highest}", param=name)
    return int(value)


async def list_keys(request: Request) -> Response:
    context = context_of(request)
    params = request.query_params
    include_revoked = _flag(params.get("include_revoked", "false"), "include_revoked")
    limit = _count(params.get("limit"), "limit", 1000, MAX_PAGE)
    offset = _count(params.get("offset"), "offset", 0, 10**9)
    keys = await run_in_threadpool(
        lambda: store.read_keys(
            context.database,
            default_limits(context.settings),
            owner=params.get("owner") or None,
            group=params.get("group") or None,
            include_revoked=include_revoked,
            limit=limit,
            offset=offset,
        )
    )
    return json_response(keys)


async def show_key(request: Request) -> Response:
    context = context_of(request)
    key = await run_in_threadpool(
        store.read_key,
        context.database,
        request.path_params["key_id"],
        default_limits(context.settings),
    )
    return json_response(key)


async def update_key(request: Request) -> Response:
    context = context_of(request)
    key_id = request.path_params["key_id"]
    payload = await parse_body(request, KeyUpdate)
    changes = key_changes(
        payload, reservation=context.settings.token_reservation_default, now=utcnow()
    )
    key = await run_in_threadpool(
        store.update_key, context.database, key_id, changes, default_limits(context.settings)
    )
    await context.keys_written()
    log.info("client key updated", key_id=key_id, fields=sorted(changes.sent))
    return json_response(key)


async def revoke_key(request: Request) -> Response:
    context = context_of(request)
    key_id = request.path_params["key_id"]
    key = await run_in_threadpool(
        store.revoke_key, context.database, key_id, default_limits(context.settings)
    )
    await context.keys_written()
    log.info("client key revoked", key_id=key_id, prefix=key.prefix, owner=key.owner)
    return json_response(key)


def keys_operation(summary: str, responses: dict[int, str], **fields: object) -> Operation:
    return Operation(
        summary=summary,
        tag="keys",
        responses={**responses, **AUTH_ERRORS},
        needs_admin_key=True,
        **fields,  # type: ignore[arg-type]
    )


def key_routes() -> list[DocumentedRoute]:
    """The keys routes mounted at /admin (the key check is the mount's middleware)."""
    bad = "invalid field (named in `param`)"
    return [
        DocumentedRoute(
            "/keys",
            create_key,
            method="POST",
            operation=keys_operation(
                "Issue a client key",
                {
                    201: "issued: the key is in this answer only",
                    400: bad,
                    409: "the owner already has a key of that name",
                },
                description="The key (`mvk_…`) is shown in this answer and never again; "
                "the gateway keeps only its SHA-256 and its prefix.",
                request_model=KeyCreate,
                response_model=KeyCreated,
                success_status=201,
            ),
        ),
        DocumentedRoute(
            "/keys/batch",
            create_keys,
            method="POST",
            operation=keys_operation(
                "Issue several keys at once, all or none (a class roster)",
                {201: "issued", 400: bad, 409: "an owner already has a key of that name"},
                description="Errors name the key by its index (`keys[3].owner`); when one "
                "is refused, none is created.",
                request_model=KeyBatch,
                response_model=KeyBatchCreated,
                success_status=201,
            ),
        ),
        DocumentedRoute(
            "/keys",
            list_keys,
            method="GET",
            operation=keys_operation(
                "List client keys (their prefixes, never the keys)",
                {200: "keys, oldest first", 400: "bad filter"},
                response_model=KeyOut,
                response_is_list=True,
                query=(
                    QueryParameter("owner", "only this owner's"),
                    QueryParameter("group", "only this group's"),
                    QueryParameter("include_revoked", "also revoked keys", "boolean"),
                    QueryParameter(
                        "limit", f"at most this many (default 1000, max {MAX_PAGE})", "integer"
                    ),
                    QueryParameter("offset", "skip this many (paging)", "integer"),
                ),
            ),
        ),
        DocumentedRoute(
            "/keys/{key_id}",
            show_key,
            method="GET",
            operation=keys_operation(
                "One client key, with its usage today",
                {200: "the key", 404: "no such key"},
                response_model=KeyOut,
            ),
        ),
        DocumentedRoute(
            "/keys/{key_id}",
            update_key,
            method="PATCH",
            operation=keys_operation(
                "Change a key's name, group, limits, models or expiry",
                {200: "changed", 400: bad, 404: "no such key", 409: "the key is revoked"},
                description="Absent fields keep their value; `limits` are merged into the "
                "key's own (a limit set to null goes back to the group's or the default).",
                request_model=KeyUpdate,
                response_model=KeyOut,
            ),
        ),
        DocumentedRoute(
            "/keys/{key_id}",
            revoke_key,
            method="DELETE",
            operation=keys_operation(
                "Revoke a key (soft: its usage history stays; final; twice is fine)",
                {200: "revoked", 404: "no such key"},
                response_model=KeyOut,
            ),
        ),
    ]
