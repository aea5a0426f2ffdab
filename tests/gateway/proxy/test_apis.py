"""Every API clients use, routed by model (#13 item 2), through the unmodified openai SDK:
the Responses API with its stored responses kept on the backend that made them,
Anthropic's Messages, vLLM's tokenizer and rerank routes at the root, audio uploads
(multipart: the model is a form field), speech and images."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shared.db import Database
from shared.models import ResponseOwner
from tests.conftest import ADMIN_KEY
from tests.support import ThreadedServer, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}


def _response(response_id: str, text: str) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1,
        "model": "m",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
    }


class ManyAPIs:
    """A backend of model "m" that speaks what vLLM does, and keeps the responses it made."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stored: dict[str, dict[str, Any]] = {}
        self.numbers = itertools.count(1)
        self.seen: list[tuple[str, str, bytes]] = []  # method, path, body
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.models),
                Route("/v1/responses", self.create, methods=["POST"]),
                Route("/v1/responses/{rid}", self.retrieve, methods=["GET", "DELETE"]),
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/tokenize", self.tokenize, methods=["POST"]),
                Route("/rerank", self.rerank, methods=["POST"]),
                Route("/v1/audio/transcriptions", self.transcribe, methods=["POST"]),
                Route("/v1/audio/speech", self.speech, methods=["POST"]),
            ]
        )

    async def _note(self, request: Request) -> bytes:
        body = await request.body()
        self.seen.append((request.method, request.url.path, body))
        return body

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "m"}, {"id": "/models/whisper"}]})

    async def create(self, request: Request) -> Response:
        document = json.loads(await self._note(request))
        previous = document.get("previous_response_id")
        if previous is not None and previous not in self.stored:
            return JSONResponse({"error": {"message": "Response not found"}}, status_code=404)
        response_id = f"resp_{self.name}_{next(self.numbers)}"
        turn = 1 + (self.stored[previous]["turn"] if previous else 0)
        answer = _response(response_id, f"{self.name} turn {turn}")
        self.stored[response_id] = {**answer, "turn": turn}
        if not document.get("stream"):
            return JSONResponse(answer)

        def event(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        async def events() -> Any:
            created = {**answer, "status": "in_progress", "output": []}
            yield event("response.created", {"response": created, "sequence_number": 0})
            yield event(
                "response.output_text.delta",
                {
                    "delta": f"{self.name} turn {turn}",
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "sequence_number": 1,
                    "logprobs": [],
                },
            )
            yield event("response.completed", {"response": answer, "sequence_number": 2})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def retrieve(self, request: Request) -> Response:
        await self._note(request)
        response_id = request.path_params["rid"]
        if response_id not in self.stored:
            return JSONResponse({"error": {"message": "Response not found"}}, status_code=404)
        if request.method == "DELETE":
            del self.stored[response_id]
            return JSONResponse({"id": response_id, "object": "response", "deleted": True})
        return JSONResponse({k: v for k, v in self.stored[response_id].items() if k != "turn"})

    async def messages(self, request: Request) -> Response:
        document = json.loads(await self._note(request))
        return JSONResponse(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": document["model"],
                "content": [{"type": "text", "text": f"{self.name} says hi"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 3, "output_tokens": 4},
            }
        )

    async def tokenize(self, request: Request) -> Response:
        document = json.loads(await self._note(request))
        tokens = list(range(len(document["prompt"].split())))
        return JSONResponse({"tokens": tokens, "count": len(tokens), "max_model_len": 2048})

    async def rerank(self, request: Request) -> Response:
        document = json.loads(await self._note(request))
        results = [
            {"index": i, "relevance_score": 1 / (1 + i)} for i in range(len(document["documents"]))
        ]
        return JSONResponse({"id": "rerank-1", "model": document["model"], "results": results})

    async def transcribe(self, request: Request) -> Response:
        await self._note(request)
        form = await request.form()
        upload = form["file"]
        assert not isinstance(upload, str)
        audio = await upload.read()
        return JSONResponse({"text": f"{form['model']} heard {len(audio)} bytes: {audio[:4]!r}"})

    async def speech(self, request: Request) -> Response:
        await self._note(request)
        return Response(b"ID3" + bytes(range(256)) * 4, media_type="audio/mpeg")


def register(gateway: ThreadedServer, url: str, **body: Any) -> str:
    response = httpx.post(
        f"{gateway.url}/admin/register",
        json={"endpoint_url": url, **body},
        headers=HEADERS,
        timeout=15,
    )
    assert response.status_code == 201, response.text
    registration_id: str = response.json()["registration_id"]
    return registration_id


def sdk(gateway: ThreadedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def test_a_conversation_stays_on_the_backend_that_holds_it(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    gateway = start_gateway(routing_strategy="round_robin")
    first, second = ManyAPIs("a"), ManyAPIs("b")
    with ThreadedServer(first.app) as one, ThreadedServer(second.app) as two:
        owners = {register(gateway, one.url, model_name="m"): first}
        owners[register(gateway, two.url, model_name="m")] = second
        client = sdk(gateway)

        opened = client.responses.create(model="m", input="hello")
        holder = opened.id.split("_")[1]  # "a" or "b": round robin picked one
        response = opened
        for turn in range(2, 8):  # round robin alone would alternate
            response = client.responses.create(
                model="m", input="and?", previous_response_id=response.id
            )
            assert response.output_text == f"{holder} turn {turn}"

        streamed = client.responses.create(
            model="m", input="go on", previous_response_id=response.id, stream=True
        )
        kinds = [event.type for event in streamed]
        assert kinds == ["response.created", "response.output_text.delta", "response.completed"]

        retrieved = client.responses.retrieve(opened.id)
        assert retrieved.id == opened.id and retrieved.output_text == f"{holder} turn 1"
        client.responses.delete(opened.id)
        try:
            client.responses.retrieve(opened.id)
            raise AssertionError("a deleted response was found")
        except openai.NotFoundError:
            pass
        unknown = httpx.get(f"{gateway.url}/v1/responses/resp_nobody_1")
        assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "response_id"

        other = second if holder == "a" else first
        assert not any(path.startswith("/v1/responses/") for _, path, _ in other.seen)

        # Another worker (here: a second gateway on the same database) finds the owner once
        # the first has written it (its usage batches, every 2 s).
        def written() -> bool:
            with database.reading() as session:
                return session.get(ResponseOwner, response.id) is not None

        wait_for(written, timeout=10, what="the response's owner written")
        with database.reading() as session:
            stored = {row.response_id for row in session.scalars(select(ResponseOwner))}
        assert opened.id in stored
        elsewhere = start_gateway(routing_strategy="round_robin")
        later = sdk(elsewhere).responses.create(
            model="m", input="still there?", previous_response_id=response.id
        )
        assert later.output_text == f"{holder} turn 8"
        assert sdk(elsewhere).responses.retrieve(response.id).id == response.id


def test_every_api_is_routed_by_model(gateway: ThreadedServer) -> None:
    backend = ManyAPIs("x")
    with ThreadedServer(backend.app) as server:
        register(gateway, server.url)  # every model it lists: m and /models/whisper
        client = sdk(gateway)

        message = httpx.post(
            f"{gateway.url}/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert message.status_code == 200 and message.json()["content"][0]["text"] == "x says hi"
        assert message.headers["x-gateway-server-id"]

        tokens = httpx.post(f"{gateway.url}/tokenize", json={"model": "m", "prompt": "a b c"})
        assert tokens.status_code == 200 and tokens.json()["count"] == 3
        sent = b'{"model": "m", "query": "q", "documents": ["d1", "d2"]}'
        ranked = httpx.post(
            f"{gateway.url}/rerank", content=sent, headers={"Content-Type": "application/json"}
        )
        assert [r["index"] for r in ranked.json()["results"]] == [0, 1]
        assert backend.seen[-1] == ("POST", "/rerank", sent)  # byte for byte, same path

        audio = b"RIFF" + bytes(range(256)) * 64
        heard = client.audio.transcriptions.create(
            model="/models/whisper", file=("clip.wav", audio, "audio/wav")
        )
        assert heard.text == f"/models/whisper heard {len(audio)} bytes: b'RIFF'"
        method, path, body = backend.seen[-1]
        assert (method, path) == ("POST", "/v1/audio/transcriptions") and audio in body

        speech = client.audio.speech.create(model="m", voice="alloy", input="hello")
        assert speech.content == b"ID3" + bytes(range(256)) * 4

        # An API the backend lacks: its own 404, passed on (no other backend has it).
        images = httpx.post(f"{gateway.url}/v1/images/generations", json={"model": "m"})
        assert images.status_code == 404

        no_model = httpx.post(
            f"{gateway.url}/v1/audio/transcriptions",
            files={"file": ("clip.wav", audio, "audio/wav")},
        )
        assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
        broken = httpx.post(
            f"{gateway.url}/v1/audio/transcriptions",
            content=b"--xyz\r\nnot a part",
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert broken.status_code == 400 and "multipart" in broken.json()["error"]["message"]


def test_a_renamed_model_in_an_audio_upload(gateway: ThreadedServer) -> None:
    backend = ManyAPIs("x")
    with ThreadedServer(backend.app) as server:
        register(gateway, server.url, model_name="whisper-1", backend_model="/models/whisper")
        audio = bytes(range(256)) * 300  # binary, with CR LF and dashes in it
        heard = sdk(gateway).audio.transcriptions.create(
            model="whisper-1", file=("clip.wav", audio, "audio/wav"), language="en"
        )
    assert heard.text.startswith(f"/models/whisper heard {len(audio)} bytes")
    _, _, body = backend.seen[-1]
    assert audio in body and b"whisper-1" not in body and b'name="language"' in body


def test_a_follow_up_on_another_worker_at_once_finds_the_holder(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    """Two gateways on one database (as two workers are): the one that made a response
    has written its owner before the client got the id, plain or streamed."""
    making = start_gateway(routing_strategy="round_robin")
    following = start_gateway(routing_strategy="round_robin")
    first, second = ManyAPIs("a"), ManyAPIs("b")
    with ThreadedServer(first.app) as one, ThreadedServer(second.app) as two:
        register(making, one.url, model_name="m")
        register(making, two.url, model_name="m")
        wait_for(lambda: len(sdk(following).models.list().data) == 1, what="routable there")
        for stream in (False, True, False, True):
            if stream:
                events = list(sdk(making).responses.create(model="m", input="hi", stream=True))
                opened_id = events[0].response.id  # type: ignore[union-attr]
            else:
                opened_id = sdk(making).responses.create(model="m", input="hi").id
            holder = opened_id.split("_")[1]
            for _ in range(2):  # round robin alone would take the other backend once
                answer = sdk(following).responses.create(
                    model="m", input="and?", previous_response_id=opened_id
                )
                assert answer.output_text.startswith(f"{holder} turn"), (stream, holder)
