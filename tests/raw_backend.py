"""A fake backend on raw sockets, so it can break exactly where a test says.

It runs its own event loop in a thread, on 127.0.0.1 at an ephemeral port.
`GET /v1/models` always answers (so registration and healthd see it healthy);
every other request is answered by the `script` (changeable while running):
a function of the request (`Seen`) returning steps, which it carries out in
order on the connection:

    Write(b"...")   the bytes, exactly
    Sleep(seconds)  say nothing for a while
    Reset()         close with RST (SO_LINGER 0): a crash, a cut cable
    Close()         close with FIN
    Hold()          say nothing until the client closes (its closing is timed)

A script that ends without Reset/Close keeps the connection for the next request.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support import wait_for


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, object]:
        document: dict[str, object] = json.loads(self.body)
        return document


@dataclass(frozen=True)
class Write:
    data: bytes


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Reset:
    pass


@dataclass(frozen=True)
class Close:
    pass


@dataclass(frozen=True)
class Hold:
    pass


Step = Write | Sleep | Reset | Close | Hold
Script = Callable[[Seen], list[Step]]


def http(status: int, body: bytes, *headers: str, content_type: str = "application/json") -> bytes:
    """A complete HTTP/1.1 answer with Content-Length."""
    lines = "".join(f"{line}\r\n" for line in headers)
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{lines}\r\n"
    ).encode() + body


def completion(text: str = "hello", model: str = "m") -> bytes:
    return json.dumps(
        {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


def chunk_event(text: str, model: str = "m") -> bytes:
    payload = {
        "id": "cmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunked(data: bytes) -> bytes:
    """One HTTP chunk carrying `data`."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def ok(seen: Seen) -> list[Step]:
    return [Write(http(200, completion()))]


@dataclass
class RawBackend:
    script: Script = ok
    model: str = "m"
    models: tuple[str, ...] = ()  # what /v1/models lists, when more than `model`
    lists_models: bool = True  # False: GET /v1/models goes to the script too
    requests: list[Seen] = field(default_factory=list)
    client_closed_at: list[float] = field(default_factory=list)  # monotonic, after a Hold

    def __post_init__(self) -> None:
        self.open = 0  # connections open now, and the most seen at once
        self.most_open = 0
        self.accepted = 0  # connections accepted in all
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None

    @property
    def posts(self) -> int:
        return sum(1 for seen in self.requests if seen.method == "POST")

    def __enter__(self) -> RawBackend:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop
        )
        self.server = started.result(timeout=10)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.thread.is_alive():
            return  # stopped already

        async def shut() -> None:
            assert self.server is not None
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def wait_client_closed(self, timeout: float = 5.0) -> float:
        wait_for(lambda: self.client_closed_at, timeout=timeout, what="the client to close")
        return self.client_closed_at[0]

    async def _read(self, reader: asyncio.StreamReader) -> Seen | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Seen(method, path, headers, body)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.accepted += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while (seen := await self._read(reader)) is not None:
                if self.lists_models and seen.method == "GET" and seen.path.endswith("/v1/models"):
                    listed = [
                        {"id": name, "object": "model"} for name in self.models or [self.model]
                    ]
                    models = {"object": "list", "data": listed}
                    writer.write(http(200, json.dumps(models).encode()))
                    await writer.drain()
                    continue
                self.requests.append(seen)
                if not await self._play(self.script(seen), reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # shutting down: end quietly (start_server reports a cancelled handler)
        finally:
            self.open -= 1
            writer.close()

    async def _play(
        self, steps: list[Step], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Carry out the steps; False when the connection is over."""
        for step in steps:
            if isinstance(step, Write):
                writer.write(step.data)
                await writer.drain()
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Reset):
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return False
            elif isinstance(step, Close):
                return False
            else:  # Hold: until the client goes
                await reader.read()
                self.client_closed_at.append(time.monotonic())
                return False
        return True
