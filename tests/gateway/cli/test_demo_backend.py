"""The demo backend speaks OpenAI (the unmodified openai SDK talks to it directly), and
every other API the gateway routes."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.cli.demo_backend import create_demo_app
from tests.gateway.proxy.test_apis import register
from tests.gateway.translate.test_fuzz import OBJECTS
from tests.support import ThreadedServer


@pytest.fixture
def client(demo_backend: ThreadedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{demo_backend.url}/v1", api_key="unused", max_retries=0)


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["demo"]


def test_chat_plain_and_streaming(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "tell me a story"}]
    reply = client.chat.completions.create(model="demo", messages=messages, max_tokens=10)  # type: ignore[arg-type]
    text = reply.choices[0].message.content or ""
    assert text.startswith("Hello from the demo backend!") and len(text.split()) == 10
    assert reply.usage is not None and reply.usage.completion_tokens == 10

    chunks = list(
        client.chat.completions.create(model="demo", messages=messages, max_tokens=10, stream=True)  # type: ignore[arg-type]
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.total_tokens == reply.usage.total_tokens
    )


def test_text_completions_and_embeddings(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="demo", prompt="once upon", max_tokens=9)
    assert completion.choices[0].text.split()[-2:] == ["once", "upon"]
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="demo", prompt="once upon", max_tokens=9, stream=True
        )
        if c.choices
    )
    assert streamed == completion.choices[0].text
    embedding = client.embeddings.create(model="demo", input=["a", "b"])
    assert [len(e.embedding) for e in embedding.data] == [8, 8]


def test_wrong_model_and_required_key() -> None:
    with ThreadedServer(create_demo_app("demo", api_key="key-1")) as backend:
        good = openai.OpenAI(base_url=f"{backend.url}/v1", api_key="key-1", max_retries=0)
        bad = openai.OpenAI(base_url=f"{backend.url}/v1", api_key="key-2", max_retries=0)
        with pytest.raises(openai.NotFoundError):
            good.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/v1/chat/completions", {"messages": [], "max_tokens": "twenty"}, "message"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "message"),
        ("/api/chat", {"messages": [], "options": {"num_predict": "many"}}, None),
        ("/v1/messages", {"messages": [], "max_tokens": "twenty"}, "message"),
        ("/v1/responses", {"input": "x", "max_output_tokens": -5}, "message"),
        ("/v1/responses", {"input": "x", "max_output_tokens": 2.5}, "message"),
        ("/v1/responses", {"input": "x", "max_output_tokens": True}, "message"),
        ("/v1/responses", {"input": "x", "max_output_tokens": "many"}, "message"),
    ],
)
def test_a_bad_max_tokens_is_the_clients_400_in_its_apis_shape(
    demo_backend: ThreadedServer, path: str, body: dict[str, object], error: str | None
) -> None:
    """It was a 500 (int() of the text; for the Responses API, a KeyError after the chat
    refused it), which the gateway passed on as a 502."""
    answer = httpx.post(f"{demo_backend.url}{path}", json={"model": "demo", **body}, timeout=10)
    assert answer.status_code == 400
    shaped = answer.json()["error"]
    text = shaped if error is None else shaped[error]
    if path == "/api/chat":
        assert text == "options.num_predict: must be of type integer"  # (Ollama's words)
        return
    name = "max_output_tokens" if path == "/v1/responses" else "max_tokens"
    assert f"{name} must be a positive integer, not {json.dumps(body[name])}" in text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [], "max_tokens": 3.0}),
        ("/v1/responses", {"input": "x", "max_output_tokens": 3.0}),
    ],
)
def test_a_count_written_as_a_whole_float_is_taken(
    demo_backend: ThreadedServer, path: str, body: dict[str, object]
) -> None:
    """As vLLM's pydantic takes it: 3.0 is 3."""
    answer = httpx.post(f"{demo_backend.url}{path}", json={"model": "demo", **body}, timeout=10)
    assert answer.status_code == 200
    usage = answer.json()["usage"]
    assert usage.get("completion_tokens", usage.get("output_tokens")) == 3


def test_a_long_bad_value_is_quoted_short(demo_backend: ThreadedServer) -> None:
    body = {"model": "demo", "messages": [], "max_tokens": "x" * 10_000}
    answer = httpx.post(f"{demo_backend.url}/v1/chat/completions", json=body, timeout=10)
    assert answer.status_code == 400 and len(answer.text) < 300


def test_every_api_through_the_gateway_with_its_own_client(
    gateway: ThreadedServer, demo_backend: ThreadedServer
) -> None:
    """The README's tour: the demo speaks each API the gateway routes, natively."""
    register(gateway, demo_backend.url, model_name="demo")
    counting = []
    hello = [{"role": "user", "content": "hi there"}]

    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    response = sdk.responses.create(model="demo", input="tell me", max_output_tokens=5)
    assert response.output_text == "Hello from the demo backend!"
    assert response.usage is not None and response.usage.output_tokens == 5
    # Kept as a server keeps it: retrieved and deleted through the gateway.
    assert sdk.responses.retrieve(response.id).output_text == response.output_text
    assert sdk.responses.delete(response.id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)
    deltas = [
        event.delta
        for event in sdk.responses.create(model="demo", input="tell me", stream=True)
        if event.type == "response.output_text.delta"
    ]
    assert "".join(deltas).startswith("Hello from the demo backend!")

    claude = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    message = claude.messages.create(model="demo", max_tokens=5, messages=hello)  # type: ignore[arg-type]
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the demo backend!"
    with claude.messages.stream(model="demo", max_tokens=3, messages=hello) as stream:  # type: ignore[arg-type]
        counting.append("".join(stream.text_stream))
    assert counting == ["Hello from the"]
    assert claude.messages.count_tokens(model="demo", messages=hello).input_tokens == 2  # type: ignore[arg-type]

    local = ollama.Client(host=gateway.url, timeout=15)
    parts = list(local.chat(model="demo", messages=hello, stream=True, options={"num_predict": 3}))
    assert "".join(p.message.content or "" for p in parts) == "Hello from the"
    assert local.generate(model="demo", prompt="hi", stream=False).done
    assert len(local.embed(model="demo", input="hi").embeddings[0]) == 8
    assert local.show("demo").modelinfo is not None
    # Each went to the demo's own route: nothing was translated by the gateway.
    assert (
        "x-gateway-dropped"
        not in httpx.post(
            f"{gateway.url}/api/chat",
            json={"model": "demo", "messages": hello, "stream": False, "keep_alive": "1m"},
            timeout=15,
        ).headers
    )


DEMO_PATHS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/tokenize",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OBJECTS, st.booleans())
def test_the_demo_answers_any_json_without_a_server_error(
    document: dict[str, Any], stream: bool
) -> None:
    """A newcomer's odd request (a prompt that is a number, a lone surrogate, a
    max_output_tokens of -5) is answered or refused, never a 500 the gateway passes on
    as a 502 (found by a new user's trial and a review)."""
    app = create_demo_app("demo", chunk_interval_ms=0)
    body = {**document, "model": "demo"}
    if stream:
        body["stream"] = True
    with TestClient(app) as client:  # (raises the server's exception, if any)
        for path in DEMO_PATHS:
            answer = client.post(path, content=json.dumps(body))  # (Infinity too)
            assert answer.status_code < 500, (path, answer.text)
