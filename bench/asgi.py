"""What the benchmark's bare ASGI backends share."""

from __future__ import annotations

from typing import Any


async def run_lifespan(receive: Any, send: Any) -> None:
    """Answer uvicorn's lifespan messages: nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
