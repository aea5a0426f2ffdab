"""Ollama's and Anthropic's clients over a real vLLM that speaks only OpenAI's API (#24).

vLLM has its own `/v1/messages`; here it stands behind a pass-through proxy that
answers 404 Not Found on that path (as a server without the route does), so the
gateway translates. Each translated answer is compared with vLLM's own chat
completion of the translated request (greedy, so repeatable): the same words,
the same counts. The vLLM is started as in tests/conformance/test_vllm.py.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import pytest
from starlette.types import Receive, Scope, Send

from shared.db import upgrade_to_head
from tests.conformance.test_vllm import model, register, start_vllm, stop  # noqa: F401
from tests.support import GatewayProcess, ThreadedServer, process_settings, start_healthd

MESSAGES = [{"role": "user", "content": "hello world"}]
# Anthropic's SDK of this day has no `temperature` argument: sent in the body, as it is.
GREEDY = {"temperature": 0}


class WithoutMessages:
    """vLLM without its Messages API: /v1/messages answers 404, the rest passes through."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/v1/messages"):
            body = b'{"detail":"Not Found"}'
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        headers = {"content-type": "application/json"}
        async with (
            httpx.AsyncClient(timeout=300) as client,
            client.stream(
                scope["method"],
                f"{self.upstream}{scope['path']}",
                content=b"".join(chunks),
                headers=headers,
            ) as answer,
        ):
            kept = [(b"content-type", answer.headers.get("content-type", "").encode())]
            await send(
                {"type": "http.response.start", "status": answer.status_code, "headers": kept}
            )
            async for piece in answer.aiter_raw():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def vllm(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    """This suite's vLLM, with tool calling on: vLLM calls even a named tool (by
    structured output) only with a tool-call parser and auto tool choice enabled."""
    log = tmp_path_factory.mktemp("vllm-tools") / "vllm.log"
    process, url = start_vllm(
        model, log, "--enable-auto-tool-choice", "--tool-call-parser", "pythonic"
    )
    yield url
    stop(process)


@pytest.fixture(scope="module")
def translating(
    vllm: str,
    model: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("translating")
    database_url = f"sqlite:///{workdir / 'registry.db'}"
    upgrade_to_head(database_url)
    settings = process_settings(workdir, database_url, HEALTH_CHECK_INTERVAL_SECONDS="1")
    with (
        ThreadedServer(WithoutMessages(vllm), lifespan="off") as proxy,
        GatewayProcess(workdir, settings) as process,
    ):
        healthd = start_healthd(workdir, settings)
        try:
            assert register(process.url, proxy.url)["served_models"] == [str(model)]
            yield process.url
        finally:
            healthd.send_signal(signal.SIGTERM)
            healthd.wait(timeout=20)


def direct_chat(vllm: str, **request: Any) -> dict[str, Any]:
    answer = httpx.post(f"{vllm}/v1/chat/completions", json=request, timeout=300)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def test_anthropics_sdk_through_translation(
    vllm: str,
    translating: str,
    model: Path,  # noqa: F811
) -> None:
    name = str(model)
    expected = direct_chat(vllm, model=name, messages=MESSAGES, max_tokens=8, temperature=0)
    text = expected["choices"][0]["message"]["content"]
    client = anthropic.Anthropic(base_url=translating, api_key="unused", max_retries=0, timeout=300)
    message = client.messages.create(
        model=name,
        max_tokens=8,
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_body=GREEDY,
    )
    assert message.content[0].type == "text" and message.content[0].text == text
    assert message.usage.input_tokens == expected["usage"]["prompt_tokens"]
    assert message.usage.output_tokens == expected["usage"]["completion_tokens"]
    assert message.stop_reason == "max_tokens"

    with client.messages.stream(
        model=name,
        max_tokens=8,
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_body=GREEDY,
    ) as stream:
        assert "".join(stream.text_stream) == text
        final = stream.get_final_message()
    assert final.usage.input_tokens == expected["usage"]["prompt_tokens"]

    tokenized = httpx.post(
        f"{vllm}/tokenize",
        json={"model": name, "messages": MESSAGES, "add_generation_prompt": True},
        timeout=60,
    ).json()
    counted = client.messages.count_tokens(model=name, messages=MESSAGES)  # type: ignore[arg-type]
    assert counted.input_tokens == tokenized["count"]

    # A tool the model must call: vLLM's structured output makes the call.
    tool = {
        "name": "lookup",
        "description": "look a word up",
        "input_schema": {
            "type": "object",
            "properties": {"word": {"type": "string", "enum": ["a", "b"]}},
            "required": ["word"],
        },
    }
    called = client.messages.create(
        model=name,
        max_tokens=64,
        extra_body=GREEDY,
        messages=MESSAGES,  # type: ignore[arg-type]
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "lookup"},
    )
    # vLLM's own answer to the translated request: the same call, its arguments parsed.
    function = {"name": "lookup", "description": tool["description"]}
    direct = direct_chat(
        vllm,
        model=name,
        max_tokens=64,
        messages=MESSAGES,
        tools=[{"type": "function", "function": {**function, "parameters": tool["input_schema"]}}],
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        **GREEDY,
    )
    (call,) = direct["choices"][0]["message"]["tool_calls"]
    try:
        arguments = json.loads(call["function"]["arguments"])
    except ValueError:
        arguments = {}  # (a random model may not finish its JSON within max_tokens)
    uses = [block for block in called.content if block.type == "tool_use"]
    assert [(use.name, use.input) for use in uses] == [("lookup", arguments)]
    cut = direct["choices"][0]["finish_reason"] == "length"
    assert called.stop_reason == ("max_tokens" if cut else "tool_use")


def test_ollamas_client_through_translation(
    vllm: str,
    translating: str,
    model: Path,  # noqa: F811
) -> None:
    name = str(model)
    expected = direct_chat(vllm, model=name, messages=MESSAGES, max_tokens=8, temperature=0)
    text = expected["choices"][0]["message"]["content"]
    client = ollama.Client(host=translating, timeout=300)
    options = {"num_predict": 8, "temperature": 0}
    reply = client.chat(model=name, messages=MESSAGES, options=options, stream=False)
    assert reply.message.content == text
    assert reply.prompt_eval_count == expected["usage"]["prompt_tokens"]
    assert reply.eval_count == 8 and reply.done_reason == "length"
    parts = list(client.chat(model=name, messages=MESSAGES, options=options, stream=True))
    assert "".join(part.message.content or "" for part in parts) == text
    assert parts[-1].done and parts[-1].eval_count == 8

    generated = client.generate(model=name, prompt="hello world", options=options, stream=False)
    assert generated.response == text  # generate goes through the chat template too
    shown = client.show(name)
    assert shown.modelinfo is not None and shown.modelinfo["general.context_length"] == 512
    answer = httpx.post(
        f"{translating}/api/chat",
        json={
            "model": name,
            "messages": MESSAGES,
            "format": "json",
            "stream": False,
            "options": {**options, "num_ctx": 512},
        },
        timeout=300,
    )
    assert answer.headers["x-gateway-dropped"] == "options.num_ctx"
    assert answer.json()["done"] is True
    json.dumps(answer.json())
