"""`GET /v1/models`: the models of the registry snapshot, and how many healthy backends each has."""

from __future__ import annotations

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.context import context_of
from gateway.json_bodies import json_response
from gateway.openapi import DocumentedRoute, Operation
from shared.errors import ServiceUnavailable


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
    snapshot = runtime.holder.current
    return json_response(
        ModelList(
            data=[
                ModelEntry(
                    id=model,
                    created=snapshot.created.get(model, 0),
                    available_servers=snapshot.healthy_count(model),
                )
                for model in sorted(snapshot.by_model)
            ]
        )
    )


def models_route() -> DocumentedRoute:
    return DocumentedRoute(
        "/models",
        list_models,
        method="GET",
        operation=Operation(
            summary="Models and how many healthy backends serve each",
            tag="inference",
            response_model=ModelList,
            responses={200: "the model list", 401: "client key required", 429: "rate limited"},
        ),
    )
