"""Ollama's own API through the gateway (#13 item 3), with Ollama's official client:
chat and generate stream NDJSON line by line, the pool answers /api/tags, /api/ps and
/api/version, and a backend without the API (vLLM) is passed over for one that has it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import ScriptedBackend
from tests.gateway.proxy.test_apis import register
from tests.support import ThreadedServer

NDJSON = "application/x-ndjson"


class FakeOllama:
    """An Ollama server: its own API and the OpenAI-compatible model list healthd reads.

    A streamed chat sends its first line, then waits for `release` (set by the test
    once that line reached the client) before the rest: a relay that buffers fails."""

    def __init__(self, models: tuple[str, ...] = ("llama3.2:latest",)) -> None:
        self.models = models
        self.release = threading.Event()
        self.break_mid_stream = False
        self.holding = False  # the first line is sent, the rest held back
        self.chats = 0
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.openai_models),
                Route("/api/chat", self.chat, methods=["POST"]),
                Route("/api/generate", self.generate, methods=["POST"]),
                Route("/api/embed", self.embed, methods=["POST"]),
                Route("/api/show", self.show, methods=["POST"]),
            ]
        )

    async def openai_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": m} for m in self.models]})

    @staticmethod
    def _line(record: dict[str, Any]) -> bytes:
        return json.dumps(record).encode() + b"\n"

    async def chat(self, request: Request) -> Response:
        self.chats += 1
        document = await request.json()
        model = document["model"]
        final = {
            "model": model,
            "created_at": "2026-11-23T00:00:00Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 11,
            "eval_count": 2,
        }
        if not document.get("stream", True):
            final["message"]["content"] = "hello there"
            return JSONResponse(final)

        async def lines() -> AsyncIterator[bytes]:
            for word in ("hello", " there"):
                yield self._line(
                    {
                        "model": model,
                        "created_at": "2026-11-23T00:00:00Z",
                        "message": {"role": "assistant", "content": word},
                        "done": False,
                    }
                )
                if word == "hello":
                    self.holding = True
                    await asyncio.to_thread(self.release.wait, 10)
                    self.holding = False
                if self.break_mid_stream:
                    raise ConnectionResetError("the laptop closed")
            yield self._line(final)

        return StreamingResponse(lines(), media_type=NDJSON)

    async def generate(self, request: Request) -> Response:
        document = await request.json()
        return JSONResponse(
            {
                "model": document["model"],
                "created_at": "2026-11-23T00:00:00Z",
                "response": f"generated for {document['prompt']}",
                "done": True,
                "prompt_eval_count": 3,
                "eval_count": 4,
            }
        )

    async def embed(self, request: Request) -> Response:
        document = await request.json()
        return JSONResponse({"model": document["model"], "embeddings": [[0.5, 0.25]]})

    async def show(self, request: Request) -> Response:
        document = await request.json()
        return JSONResponse(
            {"modelfile": "FROM x", "details": {"family": "llama"}, "model_info": {}}
            if document["model"] in self.models
            else {"error": "model not found"},
            status_code=200 if document["model"] in self.models else 404,
        )


def test_ollamas_client_through_the_gateway(gateway: ThreadedServer) -> None:
    backend = FakeOllama(("llama3.2:latest", "nomic-embed-text:latest"))
    with ThreadedServer(backend.app) as server:
        register(gateway, server.url)
        client = ollama.Client(host=gateway.url, timeout=15)

        stream = client.chat(
            model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        first = next(stream)
        assert first.message.content == "hello"
        assert backend.holding  # it arrived while the backend still held the rest back
        backend.release.set()
        rest = list(stream)
        assert [part.message.content for part in rest] == [" there", ""]
        assert rest[-1].done and rest[-1].eval_count == 2

        plain = client.chat(
            model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}], stream=False
        )
        assert plain.message.content == "hello there"
        generated = client.generate(model="llama3.2:latest", prompt="a poem", stream=False)
        assert generated.response == "generated for a poem"
        assert client.embed(model="nomic-embed-text:latest", input="x").embeddings == [[0.5, 0.25]]
        assert client.show("llama3.2:latest").details is not None

        listed = client.list()
        assert [model.model for model in listed.models] == [
            "llama3.2:latest",
            "nomic-embed-text:latest",
        ]
        assert [model.model for model in client.ps().models] == [
            "llama3.2:latest",
            "nomic-embed-text:latest",
        ]
        version = httpx.get(f"{gateway.url}/api/version").json()["version"]
        assert tuple(int(part) for part in version.split(".")) >= (0, 5, 0)

        with pytest.raises(ollama.ResponseError) as unknown:
            client.chat(model="nope", messages=[{"role": "user", "content": "hi"}], stream=False)
        assert unknown.value.status_code == 404


def test_a_stream_cut_mid_way_ends_with_an_error_line(gateway: ThreadedServer) -> None:
    backend = FakeOllama()
    backend.break_mid_stream = True
    backend.release.set()
    with ThreadedServer(backend.app) as server:
        register(gateway, server.url)
        lines = []
        with httpx.stream(
            "POST",
            f"{gateway.url}/api/chat",
            json={"model": "llama3.2:latest", "messages": [{"role": "user", "content": "hi"}]},
            timeout=15,
        ) as response:
            assert response.headers["content-type"].startswith(NDJSON)
            lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[0]["message"]["content"] == "hello"
    assert "error" in lines[-1] and "mid-stream" in lines[-1]["error"]
    with pytest.raises(ollama.ResponseError):
        backend.release.set()
        for _ in ollama.Client(host=gateway.url, timeout=15).chat(
            model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass


def test_a_backend_without_ollamas_api_is_passed_over(gateway: ThreadedServer) -> None:
    """vLLM has no /api/chat (404): remembered as lacking it, and the request goes to
    the Ollama backend of the same model."""
    vllm, real = ScriptedBackend("llama3.2:latest"), FakeOllama()
    real.release.set()
    with ThreadedServer(vllm.app) as one, ThreadedServer(real.app) as two:
        register(gateway, one.url)
        register(gateway, two.url)
        client = ollama.Client(host=gateway.url, timeout=15)
        for _ in range(4):
            answer = client.chat(
                model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}], stream=False
            )
            assert answer.message.content == "hello there"
    assert real.chats == 4
