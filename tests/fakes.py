"""Fake backends that misbehave on purpose; they speak real HTTP when served."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import Counter
from typing import Any

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
        self.paths: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests += 1
            self.paths[scope["path"]] += 1
        await self.app(scope, receive, send)

    def count(self, path: str) -> int:
        return self.paths[path]


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


class ScriptedBackend:
    """An OpenAI-ish backend whose completions misbehave as told; /v1/models always works.

    `behavior` (changeable while running): ok, error400, error500, error429, hang,
    sse_no_first_chunk, drop_before_first_byte, drop_mid_stream, stall_mid_stream, malformed_chunk,
    slow_stream, echo, gzip (a plain answer compressed although identity was asked for).
    """

    def __init__(self, model: str, behavior: str = "ok") -> None:
        self.model = model
        self.behavior = behavior
        self.completions = 0
        self.last_body: bytes = b""
        self.last_headers: dict[str, str] = {}
        self.streams_cancelled = 0  # streams that ended before their last event
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.models),
                Route("/v1/chat/completions", self.complete, methods=["POST"]),
                Route("/v1/completions", self.complete, methods=["POST"]),
                Route("/v1/embeddings", self.complete, methods=["POST"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": self.model}]})

    def _chunk(self, text: str) -> bytes:
        event = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": self.model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
        return f"data: {json.dumps(event)}\n\n".encode()

    async def complete(self, request: Request) -> Response:
        from starlette.responses import StreamingResponse

        self.completions += 1
        self.last_body = await request.body()
        self.last_headers = dict(request.headers)
        behavior = self.behavior
        if behavior == "error500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if behavior == "error400":
            return JSONResponse({"error": {"message": "bad parameter"}}, status_code=400)
        if behavior == "error429":
            return JSONResponse({"error": {"message": "busy"}}, status_code=429)
        if behavior == "hang":
            await asyncio.sleep(30)
        if behavior == "echo":
            return Response(self.last_body, media_type="application/json")
        document = json.loads(self.last_body)
        if not document.get("stream"):
            answer = JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"hi from {self.model}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                }
            )
            if behavior == "gzip":
                return Response(
                    gzip.compress(answer.body),
                    media_type="application/json",
                    headers={"Content-Encoding": "gzip"},
                )
            return answer

        async def events() -> Any:
            completed = False
            try:
                if behavior == "sse_no_first_chunk":
                    await asyncio.sleep(30)
                if behavior == "drop_before_first_byte":
                    raise RuntimeError("backend crashed before its first event")
                for index in range(5):
                    if behavior == "slow_stream":
                        await asyncio.sleep(0.2)
                    if index == 2 and behavior == "drop_mid_stream":
                        raise RuntimeError("backend crashed mid-stream")
                    if index == 2 and behavior == "stall_mid_stream":
                        await asyncio.sleep(30)
                    if index == 2 and behavior == "malformed_chunk":
                        yield b"data: {this is not json\n\n"
                    yield self._chunk(f"part{index} ")
                usage = {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
                yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
                yield b"data: [DONE]\n\n"
                completed = True
            finally:
                if not completed:
                    self.streams_cancelled += 1

        return StreamingResponse(events(), media_type="text/event-stream")
