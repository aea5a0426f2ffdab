"""`GET /v1/models`: the models a client can use now, and how many healthy backends each has.

A model is listed while at least one healthy backend serves it: a client that
picks from the list gets an answer, not a 503. `?all=true` lists every
registered model (the dashboard shows the unhealthy ones too)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.context import context_of
from gateway.json_bodies import json_response
from gateway.openapi import DocumentedRoute, Operation, QueryParameter
from shared.errors import InvalidRequest, ServiceUnavailable


class ModelEntry(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "multiverse"
    available_servers: int = Field(description="Healthy backends serving this model now.")


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelEntry]


async def list_models(request: Request) -> Response:
    runtime = context_of(request).proxy
    if runtime is None:
        raise ServiceUnavailable("the gateway is starting or stopping")
    runtime.access.admit(
        request.headers.get("authorization"), request.client.host if request.client else "unknown"
    )
    every = request.query_params.get("all", "false").lower()
    if every not in ("true", "false", "1", "0"):
        raise InvalidRequest("all must be true or false", param="all")
    snapshot = runtime.holder.current
    entries = [
        ModelEntry(
            id=model,
            created=snapshot.created.get(model, 0),
            available_servers=snapshot.healthy_count(model),
        )
        for model in sorted(snapshot.by_model)
    ]
    if every in ("false", "0"):
        entries = [entry for entry in entries if entry.available_servers > 0]
    return json_response(ModelList(data=entries))


def models_route() -> DocumentedRoute:
    return DocumentedRoute(
        "/models",
        list_models,
        method="GET",
        operation=Operation(
            summary="Models with a healthy backend, and how many healthy backends serve each",
            tag="inference",
            query=(
                QueryParameter(
                    "all", "true: every registered model, with or without a healthy backend"
                ),
            ),
            response_model=ModelList,
            responses={200: "the model list", 401: "client key required", 429: "rate limited"},
        ),
    )
