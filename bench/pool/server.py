"""Simulated vLLM servers over HTTP: several in one process, one port each.

    python -m bench.pool.server --model sim --speeds 1,1,0.5,0.25 --ports 9101,9102,9103,9104

Each serves `GET /v1/models`, `POST /v1/chat/completions` (plain or streamed:
the first token alone, as soon as it is decoded, then the rest in events of
STREAM_TOKENS tokens) and `GET /metrics` (vLLM's names). The prompt is the
chat's messages as words, each message led by its role and the whole followed
by `<assistant>`, so a conversation's next turn begins with this turn's prompt
and answer, as a real chat template makes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import uvicorn
import uvloop

from bench.asgi import run_lifespan
from bench.pool.engine import Engine, Sequence

STREAM_TOKENS = 8
JSON = [(b"content-type", b"application/json")]


def prompt_tokens(messages: list[dict[str, Any]]) -> list[str]:
    tokens: list[str] = []
    for message in messages:
        tokens.append(f"<{message.get('role', 'user')}>")
        tokens.extend(str(message.get("content", "")).split())
    tokens.append("<assistant>")
    return tokens


def chunk(model: str, text: str, finish: str | None = None) -> bytes:
    event = {
        "id": "chatcmpl-sim",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class SimServer:
    """The ASGI app of one simulated server."""

    def __init__(self, model: str, engine: Engine) -> None:
        self.model = model
        self.engine = engine

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
            return
        path = scope["path"]
        if path == "/v1/models":
            data = {"object": "list", "data": [{"id": self.model, "object": "model"}]}
            await self._answer(send, 200, json.dumps(data).encode())
        elif path == "/metrics":
            text = self.engine.metrics(self.model).encode()
            await self._answer(send, 200, text, [(b"content-type", b"text/plain")])
        elif path == "/v1/chat/completions" and scope["method"] == "POST":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            await self._chat(json.loads(body), send)
        else:
            await self._answer(send, 404, b'{"detail": "Not Found"}')

    async def _answer(
        self, send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = JSON
    ) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _chat(self, request: dict[str, Any], send: Any) -> None:
        sequence = Sequence(prompt_tokens(request["messages"]), int(request.get("max_tokens", 64)))
        self.engine.submit(sequence)
        try:
            if request.get("stream"):
                await self._stream(sequence, request, send)
            else:
                while await sequence.tokens.get() is not None:
                    pass
                answer = {
                    "id": "chatcmpl-sim",
                    "object": "chat.completion",
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": " ".join(sequence.generated),
                            },
                            "finish_reason": "length",
                        }
                    ],
                    "usage": self._usage(sequence),
                }
                await self._answer(send, 200, json.dumps(answer).encode())
        finally:
            self.engine.cancel(sequence)

    def _usage(self, sequence: Sequence) -> dict[str, int]:
        prompt, completion = len(sequence.prompt), len(sequence.generated)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def _stream(self, sequence: Sequence, request: dict[str, Any], send: Any) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        pending: list[str] = []
        first = True
        while (token := await sequence.tokens.get()) is not None:
            pending.append(token)
            if first or len(pending) >= STREAM_TOKENS:
                text = (" " if not first else "") + " ".join(pending)
                body = chunk(self.model, text)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                pending, first = [], False
        tail = (" " + " ".join(pending)) if pending else ""
        body = chunk(self.model, tail, "length")
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = {"id": "chatcmpl-sim", "object": "chat.completion.chunk", "choices": []}
            usage["usage"] = self._usage(sequence)
            body += b"data: " + json.dumps(usage).encode() + b"\n\n"
        body += b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": body})


async def serve(model: str, speeds: list[float], ports: list[int]) -> None:
    engines = [Engine(speed) for speed in speeds]
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                SimServer(model, engine),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
                loop="none",
            )
        )
        for engine, port in zip(engines, ports, strict=True)
    ]
    async with asyncio.TaskGroup() as group:
        for engine in engines:
            group.create_task(engine.run())
        for server in servers:
            group.create_task(server.serve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="sim")
    parser.add_argument("--speeds", default="1,1,0.5,0.25")
    parser.add_argument("--ports", required=True)
    arguments = parser.parse_args()
    speeds = [float(s) for s in arguments.speeds.split(",")]
    ports = [int(p) for p in arguments.ports.split(",")]
    uvloop.run(serve(arguments.model, speeds, ports))


if __name__ == "__main__":
    main()
