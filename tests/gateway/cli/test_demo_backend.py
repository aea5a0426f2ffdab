"""The demo backend speaks OpenAI: the unmodified openai SDK talks to it directly."""

from __future__ import annotations

import openai
import pytest

from gateway.cli.demo_backend import create_demo_app
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
