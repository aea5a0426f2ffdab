"""A small OpenAI-compatible server for demos, tests and benchmarks.

It answers `/v1/models`, chat and text completions (plain and streaming, tool
calls when offered tools), embeddings and vLLM's `/tokenize` with made-up but
well-formed content, so the gateway can be tried without a GPU; and, unless
`openai_only`, the other APIs the gateway routes (gateway/cli/demo_apis.py).
`gateway-admin demo-backend` runs it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.cli.demo_apis import (
    CONTEXT_LENGTH,
    DemoJSON,
    count_refused,
    json_text,
    native_routes,
    parse_body,
    quoted,
)
from shared.errors import error_body


def _words_for(prompt: str, count: int) -> list[str]:
    """A deterministic reply: a greeting, then words of the prompt, cycled."""
    base = ["Hello", "from", "the", "demo", "backend!", "You", "said:"]
    echoed = prompt.split() or ["nothing"]
    words = base + [echoed[index % len(echoed)] for index in range(max(0, count - len(base)))]
    return words[:count]


def _prompt_of(document: dict[str, Any]) -> str:
    """The words the demo echoes: the last message's content, or the prompt, whatever
    their type (a number, a list of token ids, ...): the demo never fails on them."""
    if "messages" in document:
        messages = document.get("messages")
        contents = [m.get("content", "") for m in _listed(messages) if isinstance(m, dict)]
        last = contents[-1] if contents else ""
        return last if isinstance(last, str) else json.dumps(last)
    prompt = document.get("prompt", "")
    return prompt if isinstance(prompt, str) else " ".join(map(str, _listed(prompt)))


def _listed(value: object) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _shape_refused(document: dict[str, Any], *, chat: bool) -> str | None:
    """Why a chat's messages or a completion's prompt cannot be read (None when they
    can), as vLLM would say it: the client's 400, not the demo's 500."""
    if chat and not isinstance(document.get("messages"), list):
        return "messages must be a list of messages"
    if not chat and not isinstance(document.get("prompt"), str | list):
        return "prompt must be a string or a list"
    return None


def _example_value(schema: object) -> object:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return {"string": "demo", "integer": 1, "number": 1, "boolean": True}.get(str(kind))


def _json_mode(document: dict[str, Any], words: list[str]) -> list[str] | None:
    """The reply's words as a model held to JSON writes them (`response_format`, which
    Ollama's `format` becomes): an object with the schema's properties at example
    values, or {"reply": ...}; cut at its spaces, so that a stream's pieces join into
    the same JSON. None without JSON mode. The object is whole (its answer's finish is
    `stop`: OpenAI's SDK refuses to parse a `length` one), whatever max_tokens says."""
    wanted = _object(document.get("response_format"))
    if wanted.get("type") == "json_schema":
        schema = _object(_object(wanted.get("json_schema")).get("schema"))
        properties = _object(schema.get("properties"))
        reply = {name: _example_value(kind) for name, kind in properties.items()}
    elif wanted.get("type") == "json_object":
        reply = {"reply": " ".join(words)}
    else:
        return None
    return json_text(reply).split(" ")


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def tool_call_of(document: dict[str, Any]) -> dict[str, Any] | None:
    """The call the demo makes when offered tools and the last word is the user's: the
    chosen (or first) tool, its required arguments filled with example values. (Any
    shape is read: what is not a tool's is passed over.)"""
    functions = [_object(_object(t).get("function")) for t in _listed(document.get("tools"))]
    functions = [f for f in functions if isinstance(f.get("name"), str)]
    messages = _listed(document.get("messages"))
    choice = document.get("tool_choice")
    last = _object(messages[-1] if messages else None)
    if not functions or choice == "none" or last.get("role") != "user":
        return None
    function = functions[0]
    if isinstance(choice, dict):
        wanted = _object(choice.get("function")).get("name")
        function = next((f for f in functions if f["name"] == wanted), function)
    parameters = _object(function.get("parameters"))
    properties = _object(parameters.get("properties"))
    required = [name for name in _listed(parameters.get("required")) if isinstance(name, str)]
    arguments = {name: _example_value(properties.get(name)) for name in required}
    return {
        "id": f"call_{uuid.uuid4().hex[:12]}",
        "type": "function",
        "function": {"name": function["name"], "arguments": json_text(arguments)},
    }


def create_demo_app(
    model: str,
    *,
    latency_ms: float = 0,
    chunk_interval_ms: float = 20,
    api_key: str | None = None,
    openai_only: bool = False,
) -> Starlette:
    """An app that serves `model`; `api_key`, when given, is required as a Bearer token.
    `openai_only`: only OpenAI's API (and vLLM's /tokenize), as vLLM without its
    Messages route: the gateway then translates the others."""

    def refuse(request: Request) -> Response | None:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return DemoJSON(error_body(401, "invalid API key"), status_code=401)
        return None

    async def models(request: Request) -> Response:
        if (refused := refuse(request)) is not None:
            return refused
        created = int(time.time())
        return DemoJSON(
            {
                "object": "list",
                "data": [
                    {
                        "id": model,
                        "object": "model",
                        "created": created,
                        "owned_by": "demo",
                        "max_model_len": CONTEXT_LENGTH,  # (as vLLM lists it)
                    }
                ],
            }
        )

    async def read_request(request: Request) -> dict[str, Any] | Response:
        if (refused := refuse(request)) is not None:
            return refused
        document = parse_body(await request.body())
        if isinstance(document, str):
            return DemoJSON(error_body(400, document), status_code=400)
        if document.get("model") != model:
            message = f"model {quoted(document.get('model'))} not served here; try {model!r}"
            return DemoJSON(error_body(404, message), status_code=404)
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        return document

    async def completions(request: Request) -> Response:
        document = await read_request(request)
        if isinstance(document, Response):
            return document
        return respond(document, chat=request.url.path.endswith("/chat/completions"))

    def respond(document: dict[str, Any], *, chat: bool) -> Response:
        """A chat or text completion's answer (a stream when it asks for one)."""
        max_tokens = document.get("max_tokens")
        if max_tokens is None:
            max_tokens = 16
        if (refused := count_refused(max_tokens, "max_tokens")) is not None:  # (as vLLM)
            return DemoJSON(error_body(400, refused), status_code=400)
        max_tokens = int(max_tokens)
        if (refused := _shape_refused(document, chat=chat)) is not None:
            return DemoJSON(error_body(400, refused), status_code=400)
        prompt = _prompt_of(document)
        words = _words_for(prompt, min(max_tokens, 512))
        as_json = _json_mode(document, words) if chat else None
        finish = "length" if as_json is None else "stop"
        words = words if as_json is None else as_json
        prompt_tokens = max(1, len(prompt.split()))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        call = tool_call_of(document) if chat else None
        if call is not None:
            usage["completion_tokens"] = 8
            usage["total_tokens"] = prompt_tokens + 8
            if document.get("stream"):
                return StreamingResponse(
                    _stream_call(ident, created, call, usage), media_type="text/event-stream"
                )
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return DemoJSON(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                    "usage": usage,
                }
            )
        if document.get("stream"):
            return StreamingResponse(
                _stream(ident, created, words, usage, chat=chat, finish=finish),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        text = " ".join(words)
        choice: dict[str, Any] = (
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }
            if chat
            else {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        )
        return DemoJSON(
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
        ident: str,
        created: int,
        words: list[str],
        usage: dict[str, int],
        *,
        chat: bool,
        finish: str = "length",
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
            yield f"data: {json_text(chunk)}\n\n".encode()
            if chunk_interval_ms:
                await asyncio.sleep(chunk_interval_ms / 1000)
        final_choice: dict[str, Any] = (
            {"index": 0, "delta": {}, "finish_reason": finish}
            if chat
            else {"index": 0, "text": "", "logprobs": None, "finish_reason": finish}
        )
        final = {
            "id": ident,
            "object": kind,
            "created": created,
            "model": model,
            "choices": [final_choice],
            "usage": usage,
        }
        yield f"data: {json_text(final)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def _stream_call(
        ident: str, created: int, call: dict[str, Any], usage: dict[str, int]
    ) -> AsyncIterator[bytes]:
        """A tool call streamed as OpenAI does: its id and name, then its arguments in
        pieces, then the finish reason and the usage."""
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        head = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
        deltas: list[dict[str, Any]] = [
            {"role": "assistant", "content": None, "tool_calls": [head]},
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]},
        ]
        choices: list[list[dict[str, Any]]] = [
            [{"index": 0, "delta": delta, "finish_reason": None}] for delta in deltas
        ]
        choices.append([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
        for index, choice in enumerate(choices):
            chunk: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choice,
            }
            if index == len(choices) - 1:
                chunk["usage"] = usage
            yield f"data: {json_text(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def embeddings(request: Request) -> Response:
        document = await read_request(request)
        if isinstance(document, Response):
            return document
        return embed(document)

    def embed(document: dict[str, Any]) -> Response:
        inputs = document.get("input", "")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for index, item in enumerate(items):
            digest = hashlib.sha256(str(item).encode(errors="surrogatepass")).digest()
            vector = [round(byte / 255 - 0.5, 6) for byte in digest[:8]]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(str(item).split()) for item in items)
        return DemoJSON(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def tokenize(request: Request) -> Response:
        document = await read_request(request)
        if isinstance(document, Response):
            return document
        return count(document)

    def count(document: dict[str, Any]) -> Response:
        """vLLM's /tokenize: a word a token, of a prompt or of a chat's messages."""
        if "messages" in document:
            text = " ".join(
                str(m["content"]) if isinstance(m.get("content"), str) else json.dumps(m)
                for m in _listed(document.get("messages"))
                if isinstance(m, dict)
            )
        else:
            text = str(document.get("prompt", ""))
        tokens = [index + 1 for index, _ in enumerate(text.split())]
        return DemoJSON({"count": len(tokens), "max_model_len": CONTEXT_LENGTH, "tokens": tokens})

    answers: dict[str, Callable[[dict[str, Any]], Response]] = {
        "/v1/chat/completions": functools.partial(respond, chat=True),
        "/v1/completions": functools.partial(respond, chat=False),
        "/v1/embeddings": embed,
        "/tokenize": count,
    }
    native = [] if openai_only else native_routes(model, read_request, answers)
    return Starlette(
        routes=[
            *native,
            Route("/v1/models", models),
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/tokenize", tokenize, methods=["POST"]),
        ]
    )
