"""`GET /v1/models`: the models a client can use now, and how many healthy backends each has.

A model is listed while at least one healthy backend serves it: a client that
picks from the list gets an answer, not a 503. `?all=true` lists every
registered model (the dashboard shows the unhealthy ones too)."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.openapi import DocumentedRoute, Operation, QueryParameter
from gateway.proxy.runtime import admitted
from gateway.routing.registry import CATCH_UP_AFTER_SECONDS, RegistrySnapshot, offline_error
from shared.errors import InvalidRequest, NotFound


class ModelEntry(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "multiverse"
    available_servers: int = Field(description="Healthy backends serving this model now.")
    max_model_len: int | None = Field(
        None,
        description="The context length its backends report (the smallest when they differ); "
        "absent when none does.",
    )


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelEntry]


def model_entry(snapshot: RegistrySnapshot, model: str) -> ModelEntry:
    details = snapshot.details.get(model, {})
    owner, length = details.get("owned_by"), details.get("max_model_len")
    return ModelEntry(
        id=model,
        created=snapshot.created.get(model, 0),
        owned_by=owner if isinstance(owner, str) else "multiverse",
        available_servers=snapshot.healthy_count(model),
        max_model_len=length if isinstance(length, int) else None,
    )


def _answer(content: BaseModel) -> Response:
    return JSONResponse(content.model_dump(mode="json", exclude_none=True))


async def list_models(request: Request) -> Response:
    runtime, caller = await admitted(request)
    every = request.query_params.get("all", "false").lower()
    if every not in ("true", "false", "1", "0"):
        raise InvalidRequest("all must be true or false", param="all")
    snapshot = runtime.holder.current
    entries = [
        model_entry(snapshot, model)
        for model in sorted(snapshot.by_model)
        if caller.may_use(model)  # a group's keys see only its models
    ]
    if every in ("false", "0"):
        entries = [entry for entry in entries if entry.available_servers > 0]
    return _answer(ModelList(data=entries))


async def retrieve_model(request: Request) -> Response:
    """`GET /v1/models/{model}` (the SDK's `models.retrieve`): any registered model,
    so a client can tell "unknown" (404) from "no healthy server now" (0 servers)."""
    runtime, caller = await admitted(request)
    model = request.path_params["model"]
    if not caller.may_use(model):
        raise NotFound(f"model {model!r} not found", param="model")
    snapshot = runtime.holder.current
    if model not in snapshot.by_model:
        await runtime.holder.catch_up(unless_confirmed_within=CATCH_UP_AFTER_SECONDS)
        snapshot = runtime.holder.current
    if model not in snapshot.by_model:
        offline = offline_error(snapshot, model, time.time())
        if offline is not None:
            raise offline
        raise NotFound(f"model {model!r} not found", param="model")
    return _answer(model_entry(snapshot, model))


def models_routes() -> list[DocumentedRoute]:
    return [_list_route(), _retrieve_route()]


def _retrieve_route() -> DocumentedRoute:
    return DocumentedRoute(
        "/models/{model:path}",
        retrieve_model,
        method="GET",
        operation=Operation(
            summary="One model: its healthy backends and what they say of it",
            tag="inference",
            response_model=ModelEntry,
            responses={
                200: "the model",
                401: "client key required",
                404: "no such model registered",
                429: "rate limited",
            },
        ),
    )


def _list_route() -> DocumentedRoute:
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
