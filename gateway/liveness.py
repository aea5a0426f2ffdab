"""`GET /health` (liveness: the process answers, and can it read and write the database)
and `GET /health/ready` (readiness: may a load balancer send requests here)."""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.admin.schemas import HealthResponse, ReadyResponse
from gateway.context import GatewayContext, context_of
from gateway.json_bodies import json_response
from gateway.openapi import DocumentedRoute, Operation
from shared.db import Database, check_writable
from shared.errors import ServiceUnavailable
from shared.logging import get_logger

log = get_logger("api")

SNAPSHOT_FRESH_SECONDS = 10.0
HEALTH_BUSY_TIMEOUT_MS = 250


def package_version() -> str:
    try:
        return version("multiverse-gateway")
    except PackageNotFoundError:
        return "0+unknown"


def database_readable(database: Database) -> bool:
    try:
        with database.reading() as session:
            session.execute(text("SELECT 1 FROM registry_generation"))
        return True
    except SQLAlchemyError as error:
        log.warning("database unreadable", error=str(error))
        return False


def database_writable(database: Database) -> bool:
    """Whether a write could happen now (waiting at most HEALTH_BUSY_TIMEOUT_MS): false
    while a backup or a long write holds the lock, or when the file cannot be written."""
    try:
        check_writable(database, busy_timeout_ms=HEALTH_BUSY_TIMEOUT_MS)
        return True
    except SQLAlchemyError as error:
        log.warning("database not writable", error=str(error))
        return False


async def health(request: Request) -> Response:
    database = context_of(request).database
    readable = await run_in_threadpool(database_readable, database)
    writable = await run_in_threadpool(database_writable, database)
    return json_response(
        HealthResponse(
            status="ok",
            database="ok" if readable else "unreachable",
            database_read="ok" if readable else "failing",
            database_write="ok" if writable else "failing",
            version=package_version(),
        )
    )


def not_ready_because(context: GatewayContext, now: float, readable: bool) -> list[str]:
    """What keeps this worker from being ready; empty when it is."""
    problems = []
    runtime = context.proxy
    if runtime is None:
        return ["the gateway is starting or stopping"]
    age = now - runtime.holder.confirmed_at
    if age > SNAPSHOT_FRESH_SECONDS:
        problems.append(f"the registry snapshot was last confirmed {age:.0f}s ago")
    watch = context.registry_watch
    if watch is None or watch.done():
        problems.append("the registry watcher is not running")
    if not readable:
        problems.append("the database cannot be read")
    return problems


async def ready(request: Request) -> Response:
    context = context_of(request)
    readable = await run_in_threadpool(database_readable, context.database)
    problems = not_ready_because(context, asyncio.get_running_loop().time(), readable)
    if problems:
        raise ServiceUnavailable("not ready: " + "; ".join(problems), headers={"Retry-After": "5"})
    return json_response(ReadyResponse(status="ready"))


def health_route() -> DocumentedRoute:
    return DocumentedRoute(
        "/health",
        health,
        method="GET",
        operation=Operation(
            summary="Liveness, and whether the database can be read and written now",
            tag="system",
            response_model=HealthResponse,
            responses={200: "the gateway is alive (see `database_read` and `database_write`)"},
        ),
    )


def ready_route() -> DocumentedRoute:
    return DocumentedRoute(
        "/health/ready",
        ready,
        method="GET",
        operation=Operation(
            summary="Readiness: a fresh registry snapshot, its watcher alive, the database read",
            tag="system",
            response_model=ReadyResponse,
            responses={200: "ready", 503: "not ready; the message says why"},
        ),
    )
