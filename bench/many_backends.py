"""Many fake backends behind one port, for the healthd scale scenario.

`GET /b<N>/v1/models` answers a model list at once, except every fourth
backend (N divisible by 4), which hangs until the prober gives up.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvicorn

from bench.asgi import run_lifespan

MODELS = b'{"object": "list", "data": [{"id": "scale"}]}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await run_lifespan(receive, send)
        return
    path = scope["path"]
    index = path.split("/")[1].removeprefix("b")
    if index.isdigit() and int(index) % 4 == 0:
        await asyncio.sleep(3600)  # hanging backend
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": MODELS})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=arguments.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
