"""Fake backends that misbehave on purpose; they speak real HTTP when served."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class CountingApp:
    """Counts the HTTP requests that reach the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests += 1
        await self.app(scope, receive, send)


def models_answering(status: int = 200, body: str = "", delay: float = 0) -> Starlette:
    """A backend whose GET /v1/models answers `status` with `body` after `delay` seconds."""

    async def models(request: Request) -> Response:
        if delay:
            await asyncio.sleep(delay)
        return PlainTextResponse(body, status_code=status, media_type="application/json")

    return Starlette(routes=[Route("/v1/models", models)])


def model_list_backend(*model_ids: str) -> Starlette:
    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": m} for m in model_ids]})

    return Starlette(routes=[Route("/v1/models", models)])
