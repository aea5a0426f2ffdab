"""Ollama's own API for the whole pool: `/api/tags`, `/api/ps` and `/api/version`.

Open WebUI and the `ollama` client speak Ollama's API, not OpenAI's. The
calls that name a model (`/api/chat`, `/api/generate`, `/api/embed`,
`/api/embeddings`, `/api/show`) are forwarded like any other API
(gateway/proxy/apis.py), their NDJSON streams line by line. The calls about
the server itself are answered here, for the pool as if it were one Ollama:
its models are the models with a healthy backend, from the routing snapshot
(no database I/O, no backend asked).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.openapi import DocumentedRoute, Operation
from gateway.proxy.runtime import admitted, admitted_runtime
from gateway.routing.registry import RegistrySnapshot
from gateway.routing.reported.reports import Report, holds

# The level of Ollama's API the gateway answers as (clients compare it to the
# version a feature needs); the routes above are those of this version.
OLLAMA_API_VERSION = "0.9.0"


def pool_models(
    snapshot: RegistrySnapshot, may_use: Callable[[str], bool] = lambda model: True
) -> list[dict[str, Any]]:
    """Every model with a healthy backend, in the shape of Ollama's model list. What a
    single Ollama knows of its files (size, digest, quantization) the pool does not."""
    models = []
    for name in sorted(snapshot.by_model):
        if snapshot.healthy_count(name) == 0 or not may_use(name):
            continue
        created = datetime.fromtimestamp(snapshot.created.get(name, 0), UTC)
        models.append(
            {
                "name": name,
                "model": name,
                "modified_at": created.isoformat().replace("+00:00", "Z"),
                "size": 0,
                "digest": "",
                "details": {},
            }
        )
    return models


async def tags(request: Request) -> Response:
    runtime, caller = await admitted(request)
    return JSONResponse({"models": pool_models(runtime.holder.current, caller.may_use)})


def holders(snapshot: RegistrySnapshot, reports: dict[str, Report]) -> dict[str, list[str]]:
    """model → the healthy registrations that hold it in memory now: an Ollama server
    whose `/api/ps` (as the gateway last read it) lists it, and any server that does
    not say (vLLM, llama.cpp, an Ollama read by no one: it is taken to hold what it
    serves)."""
    found: dict[str, list[str]] = {}
    for model, backends in snapshot.by_model.items():
        for backend in backends:
            if not backend.healthy:
                continue
            report = reports.get(backend.registration_id)
            loaded = None if report is None else holds(report, backend.upstream_model or model)
            if loaded is not False:
                found.setdefault(model, []).append(backend.registration_id)
    return found


async def running(request: Request) -> Response:
    """What is loaded now, pool-wide: each model some server holds in memory, with
    `servers`, the registrations that hold it (a group's keys see only its models)."""
    runtime, caller = await admitted(request)
    where = holders(runtime.holder.current, runtime.balancer.reports)
    models = [
        {**model, "size_vram": 0, "expires_at": None, "servers": sorted(where[model["name"]])}
        for model in pool_models(runtime.holder.current, caller.may_use)
        if model["name"] in where
    ]
    return JSONResponse({"models": models})


async def version(request: Request) -> Response:
    await admitted_runtime(request)
    return JSONResponse({"version": OLLAMA_API_VERSION})


def ollama_routes() -> list[DocumentedRoute]:
    def route(path: str, endpoint: Any, summary: str) -> DocumentedRoute:
        operation = Operation(
            summary=summary,
            tag="ollama",
            responses={200: "Ollama's shape", 401: "client key required", 429: "rate limited"},
        )
        return DocumentedRoute(path, endpoint, method="GET", operation=operation)

    return [
        route("/api/tags", tags, "The pool's models with a healthy backend (Ollama's list)"),
        route(
            "/api/ps",
            running,
            "The models in memory now, pool-wide, with the servers that hold each",
        ),
        route("/api/version", version, "The Ollama API version the gateway speaks"),
    ]
