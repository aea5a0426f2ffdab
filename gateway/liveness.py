"""`GET /health` (liveness: the process answers, and can it read and write the database)
and `GET /health/ready` (readiness: may a load balancer send requests here).

Both tell whether healthd still runs: it writes a heartbeat, which the registry
watcher reads with the generation (so no request reads the database for it).
"""

from __future__ import annotations

import asyncio
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.context import GatewayContext, context_of
from gateway.json_bodies import json_response
from gateway.openapi import DocumentedRoute, Operation
from shared.db import Database, write_problem
from shared.errors import DatabaseProblem, ServiceUnavailable
from shared.logging import get_logger
from shared.models import utcnow


class HealthdInstanceView(BaseModel):
    instance: str = Field(description="host:pid of the healthd process.")
    role: Literal["active", "standby"] = Field(
        description="active: it probes the backends; standby: it takes over if the active "
        "one dies (PostgreSQL only)."
    )
    heartbeat_age_seconds: float


class HealthResponse(BaseModel):
    status: Literal["ok"]
    database: Literal["ok", "unreachable"] = Field(description="Same as database_read.")
    database_read: Literal["ok", "failing"]
    database_write: Literal["ok", "failing"] = Field(
        description="Whether a write could happen now: the lock can be had (not while a "
        "backup holds it), the disk has room, the file is the one opened."
    )
    database_problem: str | None = Field(None, description="Why database_write is failing.")
    healthd: Literal["ok", "stale"] = Field(
        description="stale: healthd's heartbeat is older than 3 x HEALTH_CHECK_INTERVAL_SECONDS."
    )
    healthd_heartbeat_age_seconds: float | None = Field(
        description="Since the active healthd last wrote its heartbeat (null: none seen yet)."
    )
    healthd_instances: list[HealthdInstanceView] = Field(
        default_factory=list,
        description="Every healthd whose heartbeat is recent, active and standby.",
    )
    version: str


class ReadyResponse(BaseModel):
    status: Literal["ready"]


log = get_logger("api")

SNAPSHOT_FRESH_SECONDS = 10.0
HEALTH_BUSY_TIMEOUT_MS = 250
# healthd is taken for stopped when its heartbeat is older than this many intervals.
HEALTHD_STALE_INTERVALS = 3
WRITE_PROBLEMS = {
    DatabaseProblem.BUSY: "the database is busy (a backup or a long write holds its lock)",
    DatabaseProblem.FULL: "the disk holding the database is full",
    DatabaseProblem.FILE_GONE: "the database file was deleted or replaced under this process",
}


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


def database_write_problem(database: Database) -> str | None:
    """Why a write could not happen now (waiting at most HEALTH_BUSY_TIMEOUT_MS for the
    lock), or None: the lock held by a backup, a full disk, the file gone."""
    try:
        problem = write_problem(database, busy_timeout_ms=HEALTH_BUSY_TIMEOUT_MS)
    except SQLAlchemyError as error:
        log.warning("database not writable", error=str(error))
        return "the database cannot be written (the gateway's log says why)"
    return None if problem is None else WRITE_PROBLEMS[problem]


def healthd_problem(age: float | None, up_for: float, stale_after: float) -> str | None:
    """Why healthd looks stopped, or None. Before a first heartbeat is seen the
    gateway's own uptime stands for its age: the two usually start together."""
    if age is None:
        if up_for <= stale_after:
            return None
        return (
            f"healthd has written no heartbeat in the {up_for:.0f}s since this gateway "
            "started (is it running?): backends' health is not being checked"
        )
    if age > stale_after:
        return (
            f"healthd's last heartbeat is {age:.0f}s old (more than {HEALTHD_STALE_INTERVALS} x "
            "HEALTH_CHECK_INTERVAL_SECONDS): backends' health is not being checked"
        )
    return None


def healthd_state(context: GatewayContext) -> tuple[float | None, str | None]:
    """healthd's heartbeat age as the registry watcher last read it, and its problem."""
    age = None if context.proxy is None else context.proxy.holder.healthd_age(utcnow())
    stale_after = HEALTHD_STALE_INTERVALS * context.settings.health_check_interval_seconds
    up_for = time.monotonic() - context.started_monotonic
    return age, healthd_problem(age, up_for, stale_after)


def healthd_instances(context: GatewayContext) -> list[HealthdInstanceView]:
    """The healthd processes that beat within HEALTHD_STALE_INTERVALS intervals."""
    if context.proxy is None:
        return []
    now = utcnow()
    within = HEALTHD_STALE_INTERVALS * context.settings.health_check_interval_seconds
    views = []
    for found in context.proxy.holder.healthd_instances:
        age = (now - found.beat_at).total_seconds()
        if age <= within and found.role in ("active", "standby"):
            views.append(
                HealthdInstanceView(
                    instance=found.instance,
                    role=found.role,
                    heartbeat_age_seconds=round(age, 1),
                )
            )
    return sorted(views, key=lambda view: (view.role, view.instance))


async def health(request: Request) -> Response:
    context = context_of(request)
    database = context.database
    readable = await run_in_threadpool(database_readable, database)
    write_problem_now = await run_in_threadpool(database_write_problem, database)
    healthd_age, healthd_stale = healthd_state(context)
    return json_response(
        HealthResponse(
            status="ok",
            database="ok" if readable else "unreachable",
            database_read="ok" if readable else "failing",
            database_write="ok" if write_problem_now is None else "failing",
            database_problem=write_problem_now,
            healthd="ok" if healthd_stale is None else "stale",
            healthd_heartbeat_age_seconds=None if healthd_age is None else round(healthd_age, 1),
            healthd_instances=healthd_instances(context),
            version=package_version(),
        )
    )


def not_ready_because(
    context: GatewayContext,
    now: float,
    readable: bool,
    *,
    file_gone: bool = False,
    healthd: str | None = None,
) -> list[str]:
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
    if file_gone:
        problems.append(WRITE_PROBLEMS[DatabaseProblem.FILE_GONE])
    if healthd is not None:
        problems.append(healthd)
    return problems


def database_state(database: Database) -> tuple[bool, bool]:
    """Whether the database can be read, and whether its file was deleted or replaced."""
    file_gone = database.file is not None and database.file.problem() is not None
    return database_readable(database), file_gone


async def ready(request: Request) -> Response:
    context = context_of(request)
    readable, file_gone = await run_in_threadpool(database_state, context.database)
    problems = not_ready_because(
        context,
        asyncio.get_running_loop().time(),
        readable,
        file_gone=file_gone,
        healthd=healthd_state(context)[1],
    )
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
            summary="Readiness: a fresh registry snapshot, its watcher alive, the database "
            "read and still the file opened, healthd's heartbeat recent",
            tag="system",
            response_model=ReadyResponse,
            responses={200: "ready", 503: "not ready; the message says why"},
        ),
    )
