"""Ollama's and Anthropic's own clients, unmodified, against a backend that speaks only
OpenAI's `/v1` (the demo backend): the gateway translates (#24)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx
import ollama
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from gateway.cli.demo_backend import create_demo_app
from gateway.proxy.endpoint import LARGE_BODY_BYTES
from tests.fakes import CountingApp, ScriptedBackend
from tests.gateway.proxy.test_apis import HEADERS, register
from tests.gateway.proxy.test_ollama import FakeOllama
from tests.raw_backend import (
    LAST_CHUNK,
    SSE_HEAD,
    Hold,
    RawBackend,
    Reset,
    Seen,
    Sleep,
    Step,
    Write,
    chunk_event,
    chunked,
    completion,
    http,
)
from tests.support import ThreadedServer, wait_for

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def openai_only() -> Iterator[ThreadedServer]:
    with ThreadedServer(create_demo_app("demo", chunk_interval_ms=0, openai_only=True)) as server:
        yield server


@pytest.fixture
def pool(gateway: ThreadedServer, openai_only: ThreadedServer) -> ThreadedServer:
    register(gateway, openai_only.url, model_name="demo")
    return gateway


def test_ollamas_client_over_an_openai_backend(pool: ThreadedServer) -> None:
    client = ollama.Client(host=pool.url, timeout=15)
    hello = [{"role": "user", "content": "hi there"}]

    reply = client.chat(model="demo", messages=hello, stream=False, options={"num_predict": 5})
    assert reply.message.content == "Hello from the demo backend!"
    assert reply.done and reply.done_reason == "length"
    assert reply.prompt_eval_count == 2 and reply.eval_count == 5
    assert reply.total_duration and reply.total_duration >= (reply.eval_duration or 0)

    parts = list(client.chat(model="demo", messages=hello, options={"num_predict": 4}, stream=True))
    assert "".join(part.message.content or "" for part in parts) == "Hello from the demo"
    assert [part.done for part in parts] == [False] * 4 + [True]
    assert parts[-1].eval_count == 4 and parts[-1].prompt_eval_count == 2
    assert parts[-1].eval_duration is not None and parts[-1].total_duration

    generated = client.generate(model="demo", prompt="why is the sky blue", stream=False)
    assert generated.response.startswith("Hello from the demo backend!")
    pieces = list(
        client.generate(model="demo", prompt="why", options={"num_predict": 3}, stream=True)
    )
    assert "".join(piece.response for piece in pieces) == "Hello from the"
    assert pieces[-1].done

    embedded = client.embed(model="demo", input=["one", "two"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 8
    assert len(client.embeddings(model="demo", prompt="one").embedding) == 8

    shown = client.show("demo")
    assert shown.modelinfo is not None and shown.modelinfo["general.basename"] == "demo"
    assert shown.modelinfo["general.context_length"] == 4096  # the demo's max_model_len

    called = client.chat(model="demo", messages=hello, tools=[WEATHER], stream=False)
    assert called.message.tool_calls is not None
    assert called.message.tool_calls[0].function.name == "get_weather"
    assert called.message.tool_calls[0].function.arguments == {"city": "demo"}
    streamed = list(client.chat(model="demo", messages=hello, tools=[WEATHER], stream=True))
    calls = [call for part in streamed for call in part.message.tool_calls or []]
    assert [call.function.arguments for call in calls] == [{"city": "demo"}]

    # The answer to the tool goes back as Ollama says it (no call ids).
    answered = client.chat(
        model="demo",
        messages=[
            *hello,
            called.message,
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        ],
        stream=False,
    )
    assert "sunny" in (answered.message.content or "")

    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(model="nope", messages=hello, stream=False)
    assert refused.value.status_code == 404 and "nope" in refused.value.error


def test_a_dropped_option_is_named_and_an_untranslatable_field_refused(
    pool: ThreadedServer,
) -> None:
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "options": {"num_ctx": 8192, "temperature": 0.1},
        "keep_alive": "5m",
    }
    answer = httpx.post(f"{pool.url}/api/chat", json=body, timeout=15)
    assert answer.status_code == 200
    assert answer.headers["x-gateway-dropped"] == "options.num_ctx, keep_alive"
    refused = httpx.post(f"{pool.url}/api/chat", json={**body, "format": "yaml"}, timeout=15)
    assert refused.status_code == 400
    assert refused.json() == {"error": 'format: must be "json" or a JSON schema'}


def test_anthropics_sdk_over_an_openai_backend(pool: ThreadedServer) -> None:
    client = anthropic.Anthropic(base_url=pool.url, api_key="unused", max_retries=0)
    hello = [{"role": "user", "content": "hi there"}]

    message = client.messages.create(
        model="demo",
        max_tokens=5,
        system="Be brief.",
        messages=hello,  # type: ignore[arg-type]
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the demo backend!"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5 and message.usage.input_tokens == 2

    with client.messages.stream(model="demo", max_tokens=4, messages=hello) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the demo"
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 4
    assert final.usage.input_tokens == 2

    tool = {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
    }
    called = client.messages.create(
        model="demo",
        max_tokens=50,
        messages=hello,
        tools=[tool],  # type: ignore[arg-type, list-item]
    )
    assert called.stop_reason == "tool_use"
    use = called.content[0]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "demo"}
    with client.messages.stream(
        model="demo",
        max_tokens=50,
        messages=hello,
        tools=[tool],  # type: ignore[arg-type, list-item]
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].type == "tool_use" and streamed.content[0].input == {"city": "demo"}

    after = client.messages.create(
        model="demo",
        max_tokens=50,
        tools=[tool],  # type: ignore[list-item]
        messages=[
            *hello,  # type: ignore[list-item]
            {"role": "assistant", "content": called.content},  # type: ignore[dict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    assert after.content[0].type == "text" and "sunny" in after.content[0].text

    counted = client.messages.count_tokens(model="demo", messages=hello)  # type: ignore[arg-type]
    assert counted.input_tokens > 0

    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=5, messages=hello)  # type: ignore[arg-type]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="demo",
            max_tokens=5,
            messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}],  # type: ignore[list-item]
        )
    assert "messages[0].content[0].type" in refused.value.message


@contextmanager
def _native_and_openai_only(
    gateway: ThreadedServer, **native_fields: Any
) -> Iterator[tuple[FakeOllama, CountingApp, str]]:
    """A native Ollama and an OpenAI-only demo backend serving one model, registered:
    the native one, the other's counts of each path, and the native one's id."""
    native = FakeOllama(("llama3.2:latest",))
    openai_app = CountingApp(
        create_demo_app("llama3.2:latest", chunk_interval_ms=0, openai_only=True)
    )
    with ThreadedServer(native.app) as ollama_server, ThreadedServer(openai_app) as vllm_like:
        native_id = register(
            gateway, ollama_server.url, model_name="llama3.2:latest", **native_fields
        )
        register(gateway, vllm_like.url, model_name="llama3.2:latest")
        yield native, openai_app, native_id


def test_a_native_ollama_is_preferred_and_the_other_backend_translates_when_it_is_gone(
    gateway: ThreadedServer,
) -> None:
    with _native_and_openai_only(gateway) as (native, openai_app, native_id):
        client = ollama.Client(host=gateway.url, timeout=15)
        hello = [{"role": "user", "content": "hi"}]
        for _ in range(4):
            reply = client.chat(model="llama3.2:latest", messages=hello, stream=False)
            assert reply.message.content == "hello there"  # the native answer
        # The OpenAI-only one was asked once at most (its 404 taught the gateway).
        assert native.chats >= 3 and openai_app.count("/api/chat") <= 1
        assert openai_app.count("/v1/chat/completions") == 0

        httpx.post(
            f"{gateway.url}/admin/servers/{native_id}/drain", headers=HEADERS, timeout=15
        ).raise_for_status()
        reply = client.chat(model="llama3.2:latest", messages=hello, stream=False)
        assert reply.message.content.startswith("Hello from the demo backend!")
        assert openai_app.count("/v1/chat/completions") == 1


def test_a_request_the_only_open_backend_lacks_is_translated_while_a_native_one_drains(
    gateway: ThreadedServer,
) -> None:
    # The draining native server takes no new request: it is not "another backend
    # that may offer it", so the first 404 of the OpenAI-only one leads to translation
    # in the same request (it was a 404 to the client when the draining one counted).
    with _native_and_openai_only(gateway) as (native, openai_app, native_id):
        httpx.post(
            f"{gateway.url}/admin/servers/{native_id}/drain", headers=HEADERS, timeout=15
        ).raise_for_status()
        client = ollama.Client(host=gateway.url, timeout=15)
        reply = client.chat(model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}])
        assert reply.message.content.startswith("Hello from the demo backend!")
        assert openai_app.count("/api/chat") == 1 and native.chats == 0
        assert openai_app.count("/v1/chat/completions") == 1


def test_a_request_the_only_free_backend_lacks_is_translated_while_the_native_one_is_full(
    gateway: ThreadedServer,
) -> None:
    # As with a draining one: a native server at its max_concurrent cannot take the
    # request now, so the OpenAI-only one's 404 leads to translation, not to a 404.
    with _native_and_openai_only(gateway, max_concurrent=1) as (native, openai_app, _):
        client = ollama.Client(host=gateway.url, timeout=15)
        hello = [{"role": "user", "content": "hi"}]
        held = client.chat(model="llama3.2:latest", messages=hello, stream=True)
        try:
            next(iter(held))  # the native server holds its one slot, mid-stream
            assert native.holding
            reply = client.chat(model="llama3.2:latest", messages=hello, stream=False)
            assert reply.message.content.startswith("Hello from the demo backend!")
            assert openai_app.count("/v1/chat/completions") == 1
        finally:
            native.release.set()
            for _ in held:
                pass


def test_backend_failures_reach_each_client_in_its_own_shape(gateway: ThreadedServer) -> None:
    backend = ScriptedBackend("m", "drop_mid_stream")
    with ThreadedServer(backend.app) as server:
        register(gateway, server.url, model_name="m")
        hello = [{"role": "user", "content": "hi"}]
        client = ollama.Client(host=gateway.url, timeout=15)
        seen = []
        with pytest.raises(ollama.ResponseError) as broken:
            for part in client.chat(model="m", messages=hello, stream=True):
                seen.append(part.message.content)
        assert seen == ["part0 ", "part1 "]
        assert "mid-stream" in broken.value.error

        sdk = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
        texts = []
        with (
            pytest.raises(anthropic.APIError) as cut,
            sdk.messages.stream(model="m", max_tokens=9, messages=hello) as stream,
        ):
            texts.extend(stream.text_stream)
        assert texts == ["part0 ", "part1 "] and "mid-stream" in cut.value.message

        backend.behavior = "error400"
        with pytest.raises(anthropic.BadRequestError) as refused:
            sdk.messages.create(model="m", max_tokens=9, messages=hello)
        assert refused.value.body == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "bad parameter"},
        }
        with pytest.raises(ollama.ResponseError) as bad:
            client.generate(model="m", prompt="hi", stream=False)
        assert (bad.value.status_code, bad.value.error) == (400, "bad parameter")


def test_a_request_is_translated_whole_small_or_large(gateway: ThreadedServer) -> None:
    # A small body's translation reads the endpoint's parse of it; a large one's is
    # parsed again (the endpoint's child parser handed over only what routing reads).
    backend = ScriptedBackend("m")
    with ThreadedServer(backend.app) as server:
        register(gateway, server.url, model_name="m")
        for content in ("hi", "x" * (LARGE_BODY_BYTES + 1000)):
            messages = [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": content},
            ]
            body = {"model": "m", "messages": messages, "stream": False}
            answer = httpx.post(f"{gateway.url}/api/chat", json=body, timeout=30)
            assert answer.status_code == 200
            assert answer.json()["message"]["content"] == "hi from m"
            assert json.loads(backend.last_body)["messages"] == messages


def _anthropic_breaking_mid_stream() -> Starlette:
    """A backend that speaks Anthropic's Messages itself and dies after its first text."""

    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    async def messages(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            message = {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 0},
            }
            yield event("message_start", {"type": "message_start", "message": message})
            block = {"type": "text", "text": ""}
            start = {"type": "content_block_start", "index": 0, "content_block": block}
            yield event("content_block_start", start)
            delta = {"type": "text_delta", "text": "part0 "}
            yield event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
            raise RuntimeError("backend crashed mid-stream")

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]})

    routes = [Route("/v1/messages", messages, methods=["POST"]), Route("/v1/models", models)]
    return Starlette(routes=routes)


def test_a_native_messages_stream_cut_mid_way_reaches_the_sdk_as_an_error(
    gateway: ThreadedServer,
) -> None:
    # Anthropic's SDK reads only events named `error`: an OpenAI-shaped error event
    # after a native backend's break made the cut answer look finished.
    with ThreadedServer(_anthropic_breaking_mid_stream()) as server:
        register(gateway, server.url, model_name="m")
        sdk = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
        hello = [{"role": "user", "content": "hi"}]
        texts: list[str] = []
        with (
            pytest.raises(anthropic.APIStatusError) as cut,
            sdk.messages.stream(model="m", max_tokens=9, messages=hello) as stream,
        ):
            texts.extend(stream.text_stream)
        assert texts == ["part0 "] and "mid-stream" in cut.value.message
        message = "the backend failed mid-stream: the backend's response broke off"
        assert cut.value.body == {
            "type": "error",
            "error": {"type": "api_error", "message": message},
        }


NOT_JSON = "the request body is not valid JSON: "


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/api/chat",
            '{"format": {"type": "object", "maximum": 1e400}}',
            NOT_JSON + "the number 1e400 is out of range",
        ),
        ("/api/generate", '{"prompt": "x", "options": {"a": NaN}}', NOT_JSON + "NaN is not"),
        ("/api/chat", '{"keep_alive": -Infinity}', NOT_JSON + "-Infinity is not a JSON number"),
        (
            "/v1/messages",
            '{"max_tokens": 5, "metadata": {"a": NaN}, "tools": [{"name": "f"}]}',
            NOT_JSON + "NaN is not a JSON number",
        ),
        (
            "/v1/messages",
            '{"max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type":'
            ' "tool_use", "id": "t", "name": "f", "input": {"b": 1e400}}]}]}',
            NOT_JSON + "the number 1e400",
        ),
        # A large body, whose routing reads only a few members in a child process.
        (
            "/api/chat",
            '{"options": {"temperature": NaN}}' + " " * (LARGE_BODY_BYTES + 1),
            NOT_JSON + "NaN is not a JSON number",
        ),
        ("/api/chat", '{"format": {"a": ' + "[" * 975 + "]" * 975 + "}}", "nested too deeply"),
    ],
)
def test_what_cannot_be_written_as_json_is_the_clients_400_in_its_apis_shape(
    pool: ThreadedServer, path: str, body: str, message: str
) -> None:
    # Python's parser reads NaN, Infinity and 1e400 (as an infinity): they went on to
    # the backend as NaN and Infinity, not JSON (its "body is not JSON"), or into a tool
    # call's arguments; now refused at once on Ollama's and Anthropic's routes, whose
    # APIs refuse them (OpenAI's pass the bytes on as sent: a backend's own to judge). A
    # translation nests a schema deeper than it came: past the recursion limit, a 500.
    hello = '"model": "demo", "stream": false, "messages": [{"role": "user", "content": "x"}], '
    answer = httpx.post(
        f"{pool.url}{path}",
        content=("{" + hello + body[1:]).encode(),
        headers={"content-type": "application/json"},
        timeout=15,
    )
    assert answer.status_code == 400, answer.text
    document = answer.json()
    said = document["error"] if path.startswith("/api/") else document["error"]["message"]
    assert message in said
    if path == "/v1/messages":
        assert document["type"] == "error"


def _finished_then(*after: Step) -> RawBackend:
    """An OpenAI-only backend whose streams finish ([DONE]) and then do `after`."""
    finish = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    finish["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    events = chunk_event("hi") + b"data: " + json.dumps(finish).encode() + b"\n\ndata: [DONE]\n\n"

    def script(seen: Seen) -> list[Step]:
        if seen.path != "/v1/chat/completions":
            return [Write(http(404, b'{"detail":"Not Found"}'))]
        return [Write(SSE_HEAD + chunked(events)), *after]

    return RawBackend(script)


def _no_backend_connection_busy(gateway: ThreadedServer) -> bool:
    """Whether every connection of the gateway's pool to backends is idle (none is being
    read: a drain over)."""
    runtime = gateway.server.config.app.state.context.proxy
    return all(len(origin.idle) == origin.open for origin in runtime.transport.origins.values())


def test_a_translated_streams_backend_connection_is_reused(gateway: ThreadedServer) -> None:
    # The client's stream ends at the translator's end; the backend's own end (its last
    # chunk, 50 ms later here) is still read, so that its connection goes back to the
    # pool (closed under the last chunk, each stream dialled a connection of its own).
    hello = [{"role": "user", "content": "hi"}]
    with _finished_then(Sleep(0.05), Write(LAST_CHUNK)) as backend:
        register(gateway, backend.url, model_name="m")
        client = ollama.Client(host=gateway.url, timeout=10)
        for _ in range(3):
            parts = list(client.chat(model="m", messages=hello, stream=True))
            assert parts[-1].done_reason == "stop"
            wait_for(lambda: _no_backend_connection_busy(gateway), timeout=5, what="the drain")
        chats = [seen for seen in backend.requests if seen.path == "/v1/chat/completions"]
        assert len(chats) == 3
        # one connection for registration's checks and the 404s, one for the chats at most
        assert backend.accepted <= 2, backend.accepted


@pytest.mark.parametrize("after", [Hold(), Reset()], ids=["silent", "reset"])
def test_a_stream_is_over_at_its_done_whatever_the_backend_does_next(
    gateway: ThreadedServer, after: Step
) -> None:
    # From a review: the final record came, then after the backend's reset an error line
    # (the client raised after done), or, the backend silent, nothing until the idle
    # timeout and then the error line.
    hello = [{"role": "user", "content": "hi"}]
    with _finished_then(after) as backend:
        register(gateway, backend.url, model_name="m")
        client = ollama.Client(host=gateway.url, timeout=10)
        parts = list(client.chat(model="m", messages=hello, stream=True))
        assert [p.message.content for p in parts] == ["hi", ""]
        assert parts[-1].done and parts[-1].done_reason == "stop"
        sdk = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
        sdk = sdk.with_options(timeout=10)
        with sdk.messages.stream(model="m", max_tokens=9, messages=hello) as stream:
            assert list(stream.text_stream) == ["hi"]
            assert stream.get_final_message().stop_reason == "end_turn"


def test_ollamas_load_and_unload_are_answered_without_generating(
    gateway: ThreadedServer,
) -> None:
    # From a review: a prompt-less generate (how clients preload a model) went to the
    # backend as an empty chat with no limit, which generated (eval_count 500).
    with _finished_then(Hold()) as backend:
        register(gateway, backend.url, model_name="m")
        client = ollama.Client(host=gateway.url, timeout=10)
        loaded = client.generate(model="m")
        assert (loaded.done, loaded.done_reason, loaded.response) == (True, "load", "")
        unloaded = client.chat(model="m", messages=[], keep_alive=0)
        assert (unloaded.done, unloaded.done_reason) == (True, "unload")
        assert unloaded.message.role == "assistant"
        asked = [seen.path for seen in backend.requests]
        assert "/v1/chat/completions" not in asked and "/api/generate" in asked


def test_a_backend_answering_in_the_wrong_shape_is_translated_or_refused(
    gateway: ThreadedServer,
) -> None:
    """From a review: a whole answer to a stream's request reached Anthropic's SDK as a
    whole Message (application/json), which its stream reader does not read; a stream
    to a request for none was passed on as OpenAI's SSE; a 200 whose body is an error
    was an empty answer; llama.cpp's /tokenize (no chat) was a count of 0."""
    answers: dict[str, bytes] = {}

    def script(seen: Seen) -> list[Step]:
        if seen.path not in answers:
            return [Write(http(404, b'{"detail":"Not Found"}'))]
        return [Write(answers[seen.path])]

    hello = [{"role": "user", "content": "hi"}]
    sse = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
    events = chunk_event("hi") + b"data: [DONE]\n\n"
    with RawBackend(script) as backend:
        register(gateway, backend.url, model_name="m")
        sdk = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
        client = ollama.Client(host=gateway.url, timeout=10)
        answers["/v1/chat/completions"] = http(200, completion("whole", "m"))
        with sdk.messages.stream(model="m", max_tokens=9, messages=hello) as stream:
            assert list(stream.text_stream) == ["whole"]
            final = stream.get_final_message()
        assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == (
            "end_turn",
            1,
            1,
        )
        parts = list(client.chat(model="m", messages=hello, stream=True))
        assert [(p.message.content, p.done) for p in parts] == [("whole", True)]

        answers["/v1/chat/completions"] = sse % (len(events), events)
        with pytest.raises(anthropic.APIStatusError) as refused:
            sdk.messages.create(model="m", max_tokens=9, messages=hello)
        assert refused.value.status_code == 502
        assert "not a JSON object" in refused.value.body["error"]["message"]
        with pytest.raises(ollama.ResponseError) as bad:
            client.chat(model="m", messages=hello, stream=False)
        assert bad.value.status_code == 502 and "not a JSON object" in bad.value.error

        error = b'{"error": {"message": "the model is loading", "code": 503}}'
        answers["/v1/chat/completions"] = http(200, error)
        with pytest.raises(ollama.ResponseError) as loading:
            client.chat(model="m", messages=hello, stream=False)
        assert loading.value.status_code == 502  # (the backend's failure: failed over)
        assert "answered 200 with an error: the model is loading" in loading.value.error

        # The client's own fault (its code a 4xx) is its 4xx, in its API's shape.
        too_long = b'{"error": {"message": "the prompt is too long", "code": 400}}'
        answers["/v1/chat/completions"] = http(200, too_long)
        with pytest.raises(ollama.ResponseError) as refused_too:
            client.chat(model="m", messages=hello, stream=False)
        assert (refused_too.value.status_code, refused_too.value.error) == (
            400,
            "the prompt is too long",
        )
        with pytest.raises(anthropic.BadRequestError):
            sdk.messages.create(model="m", max_tokens=9, messages=hello)
        # A byte-order mark before the JSON is still the answer (json reads it).
        answers["/v1/chat/completions"] = http(200, b"\xef\xbb\xbf" + completion("bom", "m"))
        assert client.chat(model="m", messages=hello, stream=False).message.content == "bom"

        answers["/tokenize"] = http(200, b'{"tokens": []}')
        with pytest.raises(anthropic.APIStatusError) as uncounted:
            sdk.messages.count_tokens(model="m", messages=hello)
        assert uncounted.value.status_code == 502
        assert "did not count" in uncounted.value.body["error"]["message"]
        answers["/tokenize"] = http(200, b'{"count": 7, "max_model_len": 4096, "tokens": []}')
        assert sdk.messages.count_tokens(model="m", messages=hello).input_tokens == 7


def _requests_with_code(gateway: ThreadedServer, code: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    pattern = r'^gateway_requests_total\{[^}]*code="' + code + r'"[^}]*\} (\S+)$'
    return sum(float(count) for count in re.findall(pattern, text, re.MULTILINE))


@pytest.mark.parametrize(
    ("ending", "backends_fault"),
    [
        (LAST_CHUNK, True),  # ended with neither finish_reason nor [DONE]: cut short
        (
            chunked(b'data: {"error": {"message": "overloaded", "code": 503}}\n\n') + LAST_CHUNK,
            True,
        ),
        # the client's own (a 4xx code): no failure of the backend's, not counted so
        (chunked(b'data: {"error": {"message": "too long", "code": 400}}\n\n') + LAST_CHUNK, False),
    ],
    ids=["cut-short", "error-event", "clients-error-event"],
)
def test_a_stream_the_client_is_told_failed_is_counted_as_failed(
    gateway: ThreadedServer, ending: bytes, backends_fault: bool
) -> None:
    # From a review: the client got the API's error record, the gateway counted a 200.
    def script(seen: Seen) -> list[Step]:
        if seen.path != "/v1/chat/completions":
            return [Write(http(404, b'{"detail":"Not Found"}'))]
        if not seen.json.get("stream"):
            return [Write(http(200, completion("whole", "m")))]
        return [Write(SSE_HEAD + chunked(chunk_event("hi"))), Write(ending)]

    with RawBackend(script) as backend:
        register(gateway, backend.url, model_name="m")
        client = ollama.Client(host=gateway.url, timeout=10)
        hello = [{"role": "user", "content": "hi"}]
        client.chat(model="m", messages=hello, stream=False)  # (a 200; the path is learnt)
        failed, ok = _requests_with_code(gateway, "502"), _requests_with_code(gateway, "200")
        with pytest.raises(ollama.ResponseError):
            list(client.chat(model="m", messages=hello, stream=True))
        if backends_fault:
            wait_for(
                lambda: _requests_with_code(gateway, "502") == failed + 1, timeout=5, what="a 502"
            )
            assert _requests_with_code(gateway, "200") == ok
        else:
            wait_for(lambda: _requests_with_code(gateway, "200") == ok + 1, timeout=5, what="a 200")
            assert _requests_with_code(gateway, "502") == failed
