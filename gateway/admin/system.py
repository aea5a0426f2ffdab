"""Admin endpoints for the UI's Logs and Settings pages.

Logs are read from the JSON files the processes write (LOG_DIR/<process>.log),
newest first, from the last part of each file only, so a large log never
makes this slow. Settings are shown with every secret masked.
"""

from __future__ import annotations

import json
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.context import context_of
from gateway.json_bodies import json_response
from gateway.liveness import HEALTHD_STALE_INTERVALS, healthd_state, package_version
from gateway.openapi import DocumentedRoute, Operation, QueryParameter
from shared.db import Database
from shared.errors import InvalidRequest
from shared.models import HealthCheck, ModelServer
from shared.settings import SECRET_SETTINGS, URL_SETTINGS, Settings
from shared.urls import without_password

LOG_PROCESSES = ("gateway", "healthd")
TAIL_BYTES = 2 * 1024 * 1024
MAX_ENTRIES = 1000
LEVELS = ("debug", "info", "warning", "error", "critical")


class LogEntries(BaseModel):
    entries: list[dict[str, Any]]


class SystemInfo(BaseModel):
    settings: dict[str, Any]
    versions: dict[str, str]
    database: dict[str, Any]
    healthd: dict[str, Any]
    uptime_seconds: float


def tail_lines(path: Path, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The complete lines in the last `max_bytes` of a file."""
    if not path.exists():
        return []
    with path.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - max_bytes))
        data = file.read()
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > max_bytes else lines


def read_entries(
    log_dir: Path,
    *,
    level: str | None,
    component: str | None,
    since: str | None,
    text: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    minimum = LEVELS.index(level) if level else 0
    entries = []
    for process in LOG_PROCESSES:
        for line in tail_lines(log_dir / f"{process}.log"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            entry_level = str(entry.get("level", "info")).lower()
            if entry_level in LEVELS and LEVELS.index(entry_level) < minimum:
                continue
            if component and entry.get("component") != component:
                continue
            if since and str(entry.get("timestamp", "")) < since:
                continue
            if text and text.lower() not in line.lower():
                continue
            entry["process"] = process
            entries.append(entry)
    entries.sort(key=lambda e: str(e.get("timestamp", "")), reverse=True)
    return entries[:limit]


async def logs(request: Request) -> Response:
    params = request.query_params
    level = (params.get("level") or "").lower() or None
    if level is not None and level not in LEVELS:
        raise InvalidRequest(f"level must be one of {', '.join(LEVELS)}", param="level")
    try:
        limit = min(MAX_ENTRIES, max(1, int(params.get("limit", "200"))))
    except ValueError:
        raise InvalidRequest("limit must be a whole number", param="limit") from None
    settings = context_of(request).settings
    entries = await run_in_threadpool(
        lambda: read_entries(
            Path(settings.log_dir),
            level=level,
            component=params.get("component") or None,
            since=params.get("since") or None,
            text=params.get("q") or None,
            limit=limit,
        )
    )
    return json_response(LogEntries(entries=entries))


def masked_settings(settings: Settings) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name in SECRET_SETTINGS:
            present = (
                bool(value.get_secret_value())
                if hasattr(value, "get_secret_value")
                else bool(value)
            )
            shown[name.upper()] = "•••••• (set)" if present else "(not set)"
        elif name in URL_SETTINGS and value:
            shown[name.upper()] = without_password(value)
        else:
            shown[name.upper()] = value
    return shown


def database_stats(database: Database, url: str) -> dict[str, Any]:
    with database.reading() as session:
        servers = session.scalar(select(func.count()).select_from(ModelServer)) or 0
        active = (
            session.scalar(
                select(func.count()).select_from(ModelServer).where(ModelServer.is_active.is_(True))
            )
            or 0
        )
        checks = session.scalar(select(func.count()).select_from(HealthCheck)) or 0
    stats: dict[str, Any] = {
        "url": without_password(url),
        "registrations": servers,
        "active_registrations": active,
        "health_checks_kept": checks,
    }
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        stats["path"] = str(path.resolve())
        stats["size_bytes"] = path.stat().st_size if path.exists() else 0
    if database.file is not None:
        stats["file_problem"] = database.file.problem()  # deleted or replaced under us
    return stats


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


async def system(request: Request) -> Response:
    context = context_of(request)
    stats = await run_in_threadpool(database_stats, context.database, context.settings.database_url)
    healthd_age, healthd_problem = healthd_state(context)
    return json_response(
        SystemInfo(
            settings=masked_settings(context.settings),
            versions={
                "gateway": package_version(),
                "python": platform.python_version(),
                **{p: _version(p) for p in ("starlette", "uvicorn", "httptools", "sqlalchemy")},
            },
            database=stats,
            healthd={
                "status": "ok" if healthd_problem is None else "stale",
                "heartbeat_age_seconds": None if healthd_age is None else round(healthd_age, 1),
                "stale_after_seconds": HEALTHD_STALE_INTERVALS
                * context.settings.health_check_interval_seconds,
                "problem": healthd_problem,
            },
            uptime_seconds=round(time.monotonic() - context.started_monotonic, 1),
        )
    )


def system_routes() -> list[DocumentedRoute]:
    auth = {401: "X-API-Key header missing", 403: "X-API-Key is wrong"}
    return [
        DocumentedRoute(
            "/logs",
            logs,
            method="GET",
            operation=Operation(
                summary="Recent log entries of gateway and healthd, newest first",
                tag="admin",
                response_model=LogEntries,
                query=(
                    QueryParameter("level", "minimum level: debug, info, warning, error"),
                    QueryParameter("component", "api, registry or health_checker"),
                    QueryParameter("since", "ISO 8601 time; only entries from then on"),
                    QueryParameter("q", "text the entry must contain"),
                    QueryParameter("limit", "at most this many (1-1000, default 200)", "integer"),
                ),
                responses={200: "the entries", 400: "bad filter", **auth},
                needs_admin_key=True,
            ),
        ),
        DocumentedRoute(
            "/system",
            system,
            method="GET",
            operation=Operation(
                summary="Settings (secrets masked), versions, database statistics, healthd's "
                "heartbeat, uptime",
                tag="admin",
                response_model=SystemInfo,
                responses={200: "the system's state", **auth},
                needs_admin_key=True,
            ),
        ),
    ]
