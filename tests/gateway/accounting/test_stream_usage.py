"""Tokens of every stream (#15 item 2): the gateway asks for the usage the client did not,
counts it, and the client's stream is byte for byte what it would have been."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.accounting.stream_usage import with_usage_asked, without_usage
from shared.errors import InvalidRequest
from tests.conftest import ADMIN_KEY
from tests.support import ThreadedServer, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class UsageBackend:
    """Streams as OpenAI does: asked for usage, every chunk carries `"usage": null` and a
    last chunk with no choices carries the usage. `refuses_option`: an older server that
    answers 400 to stream_options."""

    def __init__(self, refuses_option: bool = False) -> None:
        self.refuses_option = refuses_option
        self.bodies: list[bytes] = []
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.models),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "m"}]})

    async def chat(self, request: Request) -> Response:
        body = await request.body()
        self.bodies.append(body)
        document = json.loads(body)
        asked = (document.get("stream_options") or {}).get("include_usage") is True
        if "stream_options" in document and self.refuses_option:
            refusal = "Unrecognized request argument supplied: stream_options"
            return JSONResponse({"error": {"message": refusal}}, status_code=400)

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            event: dict[str, Any] = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if asked:
                event["usage"] = None
            return event

        async def events() -> AsyncIterator[bytes]:
            deltas = (
                ({"role": "assistant", "content": "the usage"}, None),
                ({"content": ' is "usage": null'}, None),  # a text that looks like one
                ({}, "stop"),
            )
            for index, (delta, finish) in enumerate(deltas):
                yield f"data: {json.dumps(chunk(delta, finish))}\n\n".encode()
                if index == 0:  # a gap the relay sees, however loaded the machine
                    await asyncio.sleep(0.02)
            if asked:
                usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
                last = {"id": "c1", "object": "chat.completion.chunk", "created": 1,
                        "model": "m", "choices": [], "usage": usage}  # fmt: skip
                yield f"data: {json.dumps(last)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def register(gateway: ThreadedServer, url: str) -> str:
    response = httpx.post(
        f"{gateway.url}/admin/register", json={"endpoint_url": url}, headers=HEADERS, timeout=15
    )
    assert response.status_code == 201, response.text
    registration_id: str = response.json()["registration_id"]
    return registration_id


def streamed(url: str, body: dict[str, Any]) -> bytes:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=15) as response:
        assert response.status_code == 200
        return response.read()


def tokens(gateway: ThreadedServer, registration_id: str) -> tuple[int, int]:
    usage = httpx.get(f"{gateway.url}/admin/servers/{registration_id}", headers=HEADERS).json()[
        "usage"
    ]
    return usage["prompt_tokens"], usage["completion_tokens"]


def test_a_stream_without_usage_is_counted_and_unchanged(gateway: ThreadedServer) -> None:
    backend = UsageBackend()
    with ThreadedServer(backend.app) as server:
        registration_id = register(gateway, server.url)
        direct = streamed(server.url, CHAT)
        through = streamed(gateway.url, CHAT)
        assert through == direct  # no usage chunk, no "usage": null, the text untouched
        assert json.loads(backend.bodies[-1])["stream_options"] == {"include_usage": True}

        chunks = list(
            openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
            .chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )  # fmt: skip
        assert all(chunk.choices for chunk in chunks) and all(c.usage is None for c in chunks)
        wait_for(lambda: tokens(gateway, registration_id) == (18, 6), what="two streams counted")

        # A client that asks for usage itself gets it, as it asked.
        asked = {**CHAT, "stream_options": {"include_usage": True}}
        assert streamed(gateway.url, asked) == streamed(server.url, asked)


def test_a_backend_that_refuses_the_option_is_asked_again_and_remembered(
    gateway: ThreadedServer,
) -> None:
    backend = UsageBackend(refuses_option=True)
    with ThreadedServer(backend.app) as server:
        register(gateway, server.url)
        direct = streamed(server.url, CHAT)
        assert streamed(gateway.url, CHAT) == direct
        assert [b"stream_options" in body for body in backend.bodies[1:]] == [True, False]
        assert streamed(gateway.url, CHAT) == direct
        assert b"stream_options" not in backend.bodies[-1] and len(backend.bodies) == 4


def test_switched_off_the_body_goes_byte_for_byte(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    gateway = start_gateway(stream_usage_accounting=False)
    backend = UsageBackend()
    with ThreadedServer(backend.app) as server:
        register(gateway, server.url)
        sent = json.dumps(CHAT).encode()
        httpx.post(f"{gateway.url}/v1/chat/completions", content=sent, timeout=15)
    assert backend.bodies[-1] == sent


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (b'data: {"choices": [], "usage": {"prompt_tokens": 1}}\n\n', b""),
        (b'data: {"choices": [{"index": 0}], "usage": null}\n\n',
         b'data: {"choices": [{"index": 0}]}\n\n'),
        (b'data: {"usage": null, "choices": []}\n\n', b'data: {"choices": []}\n\n'),
        (b'data: {"choices": [{"delta": {"content": "\\"usage\\": null"}}]}\n\n',
         b'data: {"choices": [{"delta": {"content": "\\"usage\\": null"}}]}\n\n'),
        (b"data: [DONE]\n\n", b"data: [DONE]\n\n"),
    ],
)  # fmt: skip
def test_without_usage(events: bytes, expected: bytes) -> None:
    assert without_usage(events) == expected


def test_with_usage_asked_keeps_the_other_options() -> None:
    body = b'{"model": "m", "stream": true, "stream_options": {"continuous_usage_stats": false}}'
    assert json.loads(with_usage_asked(body))["stream_options"] == {
        "continuous_usage_stats": False,
        "include_usage": True,
    }


ASKED = b'"stream_options":{"include_usage":true}'


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        (b"{}", b"{" + ASKED + b"}"),
        (b' {\n "model": "m"}\n', b" {" + ASKED + b',\n "model": "m"}\n'),
        # The rest byte for byte: a number no float holds, a lone surrogate, an escape.
        (b'{"x": 1e999}', b"{" + ASKED + b',"x": 1e999}'),
        (b'{"m": "\\ud800", "n": "caf\\u00e9"}',
         b"{" + ASKED + b',"m": "\\ud800", "n": "caf\\u00e9"}'),
        # The text "stream_options" elsewhere is not the option.
        (b'{"c": ["stream_options"], "o": {"stream_options": 1}}',
         b"{" + ASKED + b',"c": ["stream_options"], "o": {"stream_options": 1}}'),
        # The client's options are kept, the flag set inside them.
        (b'{"stream_options": {"continuous_usage_stats": false}}',
         b'{"stream_options": {"include_usage":true,"continuous_usage_stats": false}}'),
        (b'{"stream_options" : { } }', b'{"stream_options" : {"include_usage":true } }'),
        (b'{"stream_options": {"include_usage": false}}',
         b'{"stream_options": {"include_usage": true}}'),
        (b'{"stream_options": {"include_usage": null, "include_usage": 0}}',
         b'{"stream_options": {"include_usage": true, "include_usage": true}}'),
        (b'{"stream\\u005foptions": {"a": 1}}',
         b'{"stream\\u005foptions": {"include_usage":true,"a": 1}}'),
        (b'{"stream_options": null}', b'{"stream_options": {"include_usage":true}}'),
        (b'{"stream_options": [1], "stream_options": {}}',
         b'{"stream_options": {"include_usage":true}, "stream_options": {"include_usage":true}}'),
        ('{"m": "é"}'.encode("utf-16"), ("{" + ASKED.decode() + ',"m": "é"}').encode("utf-16")),
        ('{"m": 1}'.encode("utf-16-le"), ("{" + ASKED.decode() + ',"m": 1}').encode("utf-16-le")),
    ],
)  # fmt: skip
def test_with_usage_asked_splices_the_option_into_the_bytes(body: bytes, sent: bytes) -> None:
    """#19 item 9: the body was parsed and dumped again (1e999 became Infinity, not JSON;
    a lone surrogate could not be encoded: a 500)."""
    assert with_usage_asked(body) == sent


@pytest.mark.parametrize("body", [b"[]", b'"x"', b'{"stream_options": {"a": }}', b"\xff{"])
def test_with_usage_asked_refuses_what_is_not_an_object(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        with_usage_asked(body)


def test_the_backend_gets_the_clients_bytes_with_the_option(gateway: ThreadedServer) -> None:
    """Through a real gateway: the body the backend receives is the client's, plus the
    option, and the client's stream is what the backend would have sent it."""
    backend = UsageBackend()
    with ThreadedServer(backend.app) as server:
        register(gateway, server.url)
        for sent in (
            b'{"model": "m", "stream": true, "n": 1e999, "messages": []}',
            b'{"model": "m", "stream": true, "messages": [{"content": "\\ud800"}]}',
        ):
            with httpx.stream(
                "POST", f"{gateway.url}/v1/chat/completions", content=sent, timeout=15
            ) as through:
                assert through.status_code == 200
                relayed = through.read()
            assert backend.bodies[-1] == b"{" + ASKED + b"," + sent[1:]
            with httpx.stream(
                "POST", f"{server.url}/v1/chat/completions", content=sent, timeout=15
            ) as direct:
                assert relayed == direct.read()
