"""`GET /health`: liveness, and whether the database answers."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.admin.schemas import HealthResponse
from gateway.context import context_of
from gateway.json_bodies import json_response
from gateway.openapi import DocumentedRoute, Operation
from shared.db import Database
from shared.logging import get_logger

log = get_logger("api")


def package_version() -> str:
    try:
        return version("multiverse-gateway")
    except PackageNotFoundError:
        return "0+unknown"


def database_reachable(database: Database) -> bool:
    try:
        with database.reading() as session:
            session.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError as error:
        log.warning("database unreachable", error=str(error))
        return False


async def health(request: Request) -> Response:
    reachable = await run_in_threadpool(database_reachable, context_of(request).database)
    return json_response(
        HealthResponse(
            status="ok", database="ok" if reachable else "unreachable", version=package_version()
        )
    )


def health_route() -> DocumentedRoute:
    return DocumentedRoute(
        "/health",
        health,
        method="GET",
        operation=Operation(
            summary="Liveness, and whether the database is reachable",
            tag="system",
            response_model=HealthResponse,
            responses={200: "the gateway is alive (see `database`)"},
        ),
    )
