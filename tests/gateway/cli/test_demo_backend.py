"""The demo backend speaks OpenAI (the unmodified openai SDK talks to it directly), and
every other API the gateway routes."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pydantic
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
        assert text == 'options.num_predict: option "num_predict" must be of type integer'
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


NAMES = st.text(max_size=3) | st.sampled_from(["\ud800", "a\udfffb"])
SCHEMAS = st.fixed_dictionaries(
    {"required": st.lists(NAMES, max_size=3)},
    optional={"properties": st.dictionaries(NAMES, st.builds(dict, type=st.text(max_size=7)))},
)
TOOLS = st.lists(
    st.builds(lambda n, s: {"name": n, "input_schema": s}, NAMES, SCHEMAS)  # Anthropic's
    | st.builds(lambda n, s: {"function": {"name": n, "parameters": s}}, NAMES, SCHEMAS),
    min_size=1,
    max_size=2,
)
TOOLED = st.fixed_dictionaries(
    {"messages": st.just([{"role": "user", "content": "hi"}]), "max_tokens": st.just(3)},
    optional={"tools": TOOLS, "tool_choice": st.sampled_from(["auto", "none", {"type": "any"}])},
)
DEEP = st.none() | st.tuples(
    st.sampled_from(["prompt", "messages", "input", "tools", "max_tokens", "options"]),
    st.sampled_from([201, 900, 1000, 5000]) | st.integers(150, 1200),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OBJECTS | TOOLED, st.booleans(), DEEP)
def test_the_demo_answers_any_json_without_a_server_error(
    document: dict[str, Any], stream: bool, deep: tuple[str, int] | None
) -> None:
    """A newcomer's odd request (a prompt that is a number, a lone surrogate, a
    max_output_tokens of -5, a body nested 1,000 deep, a tool's required argument named
    "\\ud800") is answered or refused in UTF-8, never a 500 the gateway passes on as a
    502 (found by a new user's trial and reviews)."""
    app = create_demo_app("demo", chunk_interval_ms=0)
    body = {**document, "model": "demo"}
    if stream:
        body["stream"] = True
    text = json.dumps(body)  # (Infinity too)
    if deep is not None:
        key, depth = deep
        text = f'{text[:-1]}, "{key}": {"[" * depth}{"]" * depth}}}'
    with TestClient(app) as client:  # (raises the server's exception, if any)
        for path in DEMO_PATHS:
            answer = client.post(path, content=text)
            assert answer.status_code < 500, (path, answer.text)
            answer.content.decode()  # (strict UTF-8: no lone surrogate written)


def _message_of(path: str, answer: httpx.Response) -> str:
    """An error's words, read in the shape of the API `path` belongs to (KeyError or
    AssertionError when the shape is another API's)."""
    body = answer.json()
    if path.startswith("/api/"):
        assert isinstance(body["error"], str), body
        return body["error"]
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and body["error"]["type"].endswith("_error")
    return str(body["error"]["message"])


@pytest.mark.parametrize("path", DEMO_PATHS)
@pytest.mark.parametrize(
    "body",
    [
        "[" * 5000 + "]" * 5000,
        '{"model": "demo", "prompt": [' + "[" * 990 + "]" * 990 + "]}",
        '{"model": "demo", "messages": [{"content": ' + "[" * 900 + "]" * 900 + "}]}",
    ],
    ids=["5000", "990", "900"],
)
def test_a_body_nested_too_deeply_is_the_clients_400_in_its_apis_shape(
    path: str, body: str
) -> None:
    """The parser's RecursionError was a 500 (only its ValueError was caught); a body
    parsed just under the limit is refused too, lest echoing or hashing it recurse."""
    with TestClient(create_demo_app("demo")) as client:
        answer = client.post(path, content=body)
    assert answer.status_code == 400
    assert "nested too deeply" in _message_of(path, answer)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("path", "tool"),
    [
        ("/v1/messages", {"name": "f", "input_schema": {"required": ["\ud800"]}}),
        ("/api/chat", {"function": {"name": "f", "parameters": {"required": ["\ud800"]}}}),
        ("/v1/chat/completions", {"function": {"name": "f\udfff", "parameters": {}}}),
        (
            "/v1/chat/completions",
            {"function": {"name": "f", "parameters": {"required": ["\ud800"]}}},
        ),
    ],
)
def test_a_lone_surrogate_in_a_tool_is_answered_in_utf8(
    path: str, tool: dict[str, Any], stream: bool
) -> None:
    """A lone surrogate in a required argument's name was a UnicodeEncodeError (a 500)
    when the answer was written; every JSON the demo writes now has it as U+FFFD."""
    hello = [{"role": "user", "content": "hi"}]
    body = {"model": "demo", "max_tokens": 3, "messages": hello, "tools": [tool], "stream": stream}
    with TestClient(create_demo_app("demo", chunk_interval_ms=0)) as client:
        answer = client.post(path, content=json.dumps(body))
    assert answer.status_code == 200
    text = answer.content.decode()  # (strict UTF-8; a translated stream escapes U+FFFD)
    assert "\ufffd" in text.replace("\\ufffd", "\ufffd")
    assert "\\ud800" not in text and "\\udfff" not in text


@pytest.mark.parametrize("path", DEMO_PATHS)
@pytest.mark.parametrize("value", ['"' + "x" * 10_000_000 + '"', "[" * 150 + "]" * 150])
def test_an_unknown_model_is_quoted_short(path: str, value: str) -> None:
    """It was echoed whole: a 10 MB name came back in the 404."""
    with TestClient(create_demo_app("demo")) as client:
        answer = client.post(path, content=f'{{"model": {value}}}')
    assert answer.status_code == 404 and len(answer.content) < 300
    assert "not served here" in _message_of(path, answer)


HELLO = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": HELLO}, "max_tokens: Field required"),
        ({"messages": HELLO, "max_tokens": None}, "max_tokens: Field required"),
        ({"max_tokens": 3, "messages": []}, "messages: at least one message is required"),
        ({"max_tokens": 3}, "messages: Field required"),
        ({"max_tokens": 3, "messages": "hi"}, "messages: must be a list"),
    ],
)
def test_messages_wants_max_tokens_and_a_message_as_anthropic_does(
    demo_backend: ThreadedServer, body: dict[str, object], message: str
) -> None:
    """Anthropic's API refuses both (a chat's max_tokens defaults to 16, its messages may
    be empty), so the demo answered what Anthropic refuses."""
    url = f"{demo_backend.url}/v1/messages"
    answer = httpx.post(url, json={"model": "demo", **body}, timeout=10)
    assert answer.status_code == 400
    error = {"type": "invalid_request_error", "message": message}
    assert answer.json() == {"type": "error", "error": error}


@pytest.mark.parametrize("stream", [False, True])
def test_the_demo_answers_json_when_asked_for_json(
    demo_backend: ThreadedServer, stream: bool
) -> None:
    # Ollama's `format` (a chat completion's response_format) was plain text: the tour's
    # `format: "json"` showed nothing of it (from a new user's trial).
    client = ollama.Client(host=demo_backend.url, timeout=15)
    hello = [{"role": "user", "content": "the weather"}]
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "t": {}}}
    for wanted, expected in (("json", {"reply"}), (schema, {"city": "demo", "t": None})):
        if stream:
            parts = client.chat(model="demo", messages=hello, format=wanted, stream=True)
            text = "".join(part.message.content or "" for part in parts)
        else:
            text = client.chat(model="demo", messages=hello, format=wanted).message.content or ""
        answer = json.loads(text)
        if wanted == "json":
            assert set(answer) == expected and answer["reply"].startswith("Hello from the demo")
        else:
            assert answer == expected


def test_the_demo_json_parses_with_openais_structured_outputs(demo_backend: ThreadedServer) -> None:
    # A `length` finish makes the SDK refuse the answer (LengthFinishReasonError): the
    # demo's JSON is whole, so its finish is `stop` (from the review).
    class City(pydantic.BaseModel):
        city: str
        people: int

    client = openai.OpenAI(base_url=f"{demo_backend.url}/v1", api_key="x", max_retries=0)
    hello = [{"role": "user", "content": "a city"}]
    parsed = client.chat.completions.parse(model="demo", messages=hello, response_format=City)
    assert parsed.choices[0].message.parsed == City(city="demo", people=1)
    reply = ollama.Client(host=demo_backend.url, timeout=15).chat(
        model="demo", messages=hello, format="json"
    )
    assert reply.done_reason == "stop"
