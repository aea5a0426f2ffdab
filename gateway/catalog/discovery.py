"""Discovery for clients (the seed's discovery mode): `GET /registry` and `GET /route`.

`/registry` lists every model and its replicas (registration id, the models it
serves, health, draining, tags, owner): never a URL, never a key. `/route`
picks a replica for `model` (and `tags`) by the proxy's own routing policy
and returns its endpoint, for clients that then talk to it directly: only
with DISCOVERY_DIRECT=true, and only among backends that need no key (a
backend's key never leaves the gateway). Both follow REQUIRE_CLIENT_AUTH and
the rate limit, like /v1, and read the in-memory snapshot (no database I/O).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.openapi import DocumentedRoute, Operation, QueryParameter
from gateway.proxy.runtime import admitted
from gateway.routing.policy import parse_tags
from shared.errors import InvalidRequest, NotFound, ServiceUnavailable


async def registry(request: Request) -> Response:
    runtime, caller = await admitted(request)
    snapshot = runtime.holder.current
    models: dict[str, list[dict[str, Any]]] = {}
    for model in sorted(filter(caller.may_use, snapshot.by_model)):  # a group's only
        models[model] = [
            {
                "replica_id": backend.registration_id,
                "health": "healthy" if backend.healthy else "unhealthy",
                "draining": backend.draining,
                "tags": sorted(backend.tags),
                "owner": backend.owner,
            }
            for backend in snapshot.by_model[model]
        ]
    claims = {
        model: {
            "owner": claim.owner,
            "owner_replica_id": claim.owner_id,
            "co_hosts": sorted(claim.co_hosts),
        }
        for model, claim in sorted(snapshot.claims.items())
        if caller.may_use(model)
    }
    return JSONResponse({"models": models, "claims": claims})


async def route(request: Request) -> Response:
    runtime, caller = await admitted(request)
    if not runtime.settings.discovery_direct:
        raise NotFound(
            "direct discovery is off (DISCOVERY_DIRECT=false): send requests to /v1 instead"
        )
    model = request.query_params.get("model")
    if not model:
        raise InvalidRequest("model is required", param="model")
    backends = runtime.holder.current.backends(model) if caller.may_use(model) else ()
    if not backends:
        raise NotFound(f"model {model!r} not found", param="model")
    keyless = tuple(backend for backend in backends if backend.api_key is None)
    backend = runtime.balancer.pick(
        keyless,
        required_tags=parse_tags(request.query_params.get("tags")),
        exclude=runtime.learned.ejected_for(model),
        streaming=False,
    )
    if backend is None:
        raise ServiceUnavailable(
            f"no healthy replica of {model!r} can be reached directly "
            "(with the tags asked for, and without a backend key)",
            headers={"Retry-After": "5"},
        )
    return JSONResponse(
        {
            "endpoint": backend.base_url,
            "replica_id": backend.registration_id,
            "model": backend.upstream_model or model,
        }
    )


def discovery_routes() -> list[DocumentedRoute]:
    return [
        DocumentedRoute(
            "/registry",
            registry,
            method="GET",
            operation=Operation(
                summary="Every model and its replicas (no URLs, no keys)",
                tag="discovery",
                responses={200: "the registry", 401: "client key required", 429: "rate limited"},
            ),
        ),
        DocumentedRoute(
            "/route",
            route,
            method="GET",
            operation=Operation(
                summary="A replica to call directly, chosen by the routing policy",
                description="Only with DISCOVERY_DIRECT=true, and only backends that need no key.",
                tag="discovery",
                query=(
                    QueryParameter("model", "the model to route"),
                    QueryParameter("tags", "comma-separated tags the replica must carry"),
                ),
                responses={
                    200: "the replica's endpoint",
                    400: "no model",
                    404: "unknown model, or direct discovery is off",
                    503: "no healthy replica reachable directly",
                },
            ),
        ),
    ]
