"""A backend that speaks only OpenAI's API (as vLLM with /v1/messages hidden), answering
the typical chat (bench/translate/chat.py): Ollama's and Anthropic's paths are its
404, so the gateway translates them.

    python -m bench.translate.backend --port 9100 [--interval 0.002]

A stream's events are written one by one, `--interval` seconds apart, so that
each reaches the gateway in a read of its own, as a model's tokens do.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvicorn

from bench.asgi import run_lifespan
from bench.backend import JSON_HEADERS, METRICS, MODELS, TEXT_HEADERS
from bench.translate.chat import stream_events, whole_answer

NOT_FOUND = b'{"detail":"Not Found"}'
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]


def create_app(interval: float) -> Any:
    answer = whole_answer()
    streams = {asked: stream_events(asked) for asked in (False, True)}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        if path == "/v1/models":
            await _answer(send, 200, JSON_HEADERS, MODELS)
        elif path == "/metrics":
            await _answer(send, 200, TEXT_HEADERS, METRICS)
        elif path != "/v1/chat/completions":
            await _answer(send, 404, JSON_HEADERS, NOT_FOUND)
        elif b'"stream":true' not in body.replace(b" ", b""):
            await _answer(send, 200, JSON_HEADERS, answer)
        else:
            asked = b'"include_usage":true' in body.replace(b" ", b"")
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            for event in streams[asked]:
                await send({"type": "http.response.body", "body": event, "more_body": True})
                await asyncio.sleep(interval)
            await send({"type": "http.response.body", "body": b""})

    return app


async def _answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.002, help="seconds between events")
    arguments = parser.parse_args()
    uvicorn.run(
        create_app(arguments.interval),
        host="127.0.0.1",
        port=arguments.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
