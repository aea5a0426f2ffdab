"""A small OpenAI-compatible server for demos, tests and benchmarks.

It answers `/v1/models`, chat and text completions (plain and streaming) and
embeddings with made-up but well-formed content, so the gateway can be tried
without a GPU. `gateway-admin demo-backend` runs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shared.errors import error_body


def _words_for(prompt: str, count: int) -> list[str]:
    """A deterministic reply: a greeting, then words of the prompt, cycled."""
    base = ["Hello", "from", "the", "demo", "backend!", "You", "said:"]
    echoed = prompt.split() or ["nothing"]
    words = base + [echoed[index % len(echoed)] for index in range(max(0, count - len(base)))]
    return words[:count]


def _prompt_of(document: dict[str, Any]) -> str:
    if "messages" in document:
        messages = document.get("messages") or []
        contents = [m.get("content", "") for m in messages if isinstance(m, dict)]
        last = contents[-1] if contents else ""
        return last if isinstance(last, str) else json.dumps(last)
    prompt = document.get("prompt", "")
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


def create_demo_app(
    model: str, *, latency_ms: float = 0, chunk_interval_ms: float = 20, api_key: str | None = None
) -> Starlette:
    """An app that serves `model`; `api_key`, when given, is required as a Bearer token."""

    def refuse(request: Request) -> Response | None:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return JSONResponse(error_body(401, "invalid API key"), status_code=401)
        return None

    async def models(request: Request) -> Response:
        if (refused := refuse(request)) is not None:
            return refused
        created = int(time.time())
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": model, "object": "model", "created": created, "owned_by": "demo"}],
            }
        )

    async def read_request(request: Request) -> dict[str, Any] | Response:
        if (refused := refuse(request)) is not None:
            return refused
        try:
            document = json.loads(await request.body())
        except ValueError:
            return JSONResponse(error_body(400, "body is not JSON"), status_code=400)
        if not isinstance(document, dict):
            return JSONResponse(error_body(400, "body must be an object"), status_code=400)
        if document.get("model") != model:
            message = f"model {document.get('model')!r} not served here; try {model!r}"
            return JSONResponse(error_body(404, message), status_code=404)
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        return document

    async def completions(request: Request) -> Response:
        document = await read_request(request)
        if isinstance(document, Response):
            return document
        chat = request.url.path.endswith("/chat/completions")
        prompt = _prompt_of(document)
        max_tokens = document.get("max_tokens") or 16
        words = _words_for(prompt, max(1, min(int(max_tokens), 512)))
        prompt_tokens = max(1, len(prompt.split()))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if document.get("stream"):
            return StreamingResponse(
                _stream(ident, created, words, usage, chat=chat),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        text = " ".join(words)
        choice: dict[str, Any] = (
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
            if chat
            else {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        )
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
        )

    async def _stream(
        ident: str, created: int, words: list[str], usage: dict[str, int], *, chat: bool
    ) -> AsyncIterator[bytes]:
        kind = "chat.completion.chunk" if chat else "text_completion"
        for index, word in enumerate(words):
            piece = word if index == 0 else f" {word}"
            choice: dict[str, Any] = (
                {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                if chat
                else {"index": 0, "text": piece, "logprobs": None, "finish_reason": None}
            )
            if chat and index == 0:
                choice["delta"]["role"] = "assistant"
            chunk = {
                "id": ident,
                "object": kind,
                "created": created,
                "model": model,
                "choices": [choice],
            }
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            if chunk_interval_ms:
                await asyncio.sleep(chunk_interval_ms / 1000)
        final_choice: dict[str, Any] = (
            {"index": 0, "delta": {}, "finish_reason": "length"}
            if chat
            else {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}
        )
        final = {
            "id": ident,
            "object": kind,
            "created": created,
            "model": model,
            "choices": [final_choice],
            "usage": usage,
        }
        yield f"data: {json.dumps(final)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def embeddings(request: Request) -> Response:
        document = await read_request(request)
        if isinstance(document, Response):
            return document
        inputs = document.get("input", "")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for index, item in enumerate(items):
            digest = hashlib.sha256(str(item).encode()).digest()
            vector = [round(byte / 255 - 0.5, 6) for byte in digest[:8]]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(str(item).split()) for item in items)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ]
    )
