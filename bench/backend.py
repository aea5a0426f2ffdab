"""A deliberately fast OpenAI-ish backend for benchmarks: a bare ASGI app under uvicorn.

It must not be the bottleneck, so it has no framework: fixed answers, and for
`"stream": true` a stream of CHUNKS events INTERVAL seconds apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from typing import Any

import uvicorn

from bench.asgi import run_lifespan

MODEL = "bench"

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "benchmark answer"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
JSON_HEADERS = [(b"content-type", b"application/json")]
TEXT_HEADERS = [(b"content-type", b"text/plain; version=0.0.4")]
METRICS = (
    f'vllm:num_requests_running{{model_name="{MODEL}"}} 0.0\n'
    f'vllm:num_requests_waiting{{model_name="{MODEL}"}} 0.0\n'
    f'vllm:kv_cache_usage_perc{{model_name="{MODEL}"}} 0.0\n'
).encode()


def chunk(index: int) -> bytes:
    event = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": f"<{index}>"}, "finish_reason": None}],
    }
    return f"data: {json.dumps(event)}\n\n".encode()


def create_app(chunks: int, interval: float, delay: float = 0.0, jitter: float = 0.0) -> Any:
    draw = random.Random(20).uniform  # (seeded: runs compare)

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
        if scope["path"] == "/v1/models":
            await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
            await send({"type": "http.response.body", "body": MODELS})
            return
        if scope["path"] == "/metrics":  # vLLM's load figures, for the gateway's `auto`
            await send({"type": "http.response.start", "status": 200, "headers": TEXT_HEADERS})
            await send({"type": "http.response.body", "body": METRICS})
            return
        if b'"stream": true' not in body and b'"stream":true' not in body:
            if delay:  # a model's time per answer, give or take `jitter` of it (fair_share.py)
                await asyncio.sleep(delay * draw(1 - jitter, 1 + jitter))
            await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
            await send({"type": "http.response.body", "body": COMPLETION})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for index in range(chunks):
            await send({"type": "http.response.body", "body": chunk(index), "more_body": True})
            await asyncio.sleep(interval)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per whole answer")
    parser.add_argument("--jitter", type=float, default=0.0, help="share of --delay, 0 to 1")
    arguments = parser.parse_args()
    uvicorn.run(
        create_app(arguments.chunks, arguments.interval, arguments.delay, arguments.jitter),
        host="127.0.0.1",
        port=arguments.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
