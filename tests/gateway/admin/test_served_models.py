"""Servers, not model names (#13 items 1 and 5): a registration serves every model its
backend lists, or the one it names (under the backend's own name if need be), and
`/v1/models` says what the backends say of each."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.db import Database
from shared.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.healthd.test_daemon import running, until
from tests.support import ThreadedServer

HEADERS = {"X-API-Key": ADMIN_KEY}


class ModelShelf:
    """A backend with several models, as vLLM and Ollama list them; the list can change."""

    def __init__(self, models: dict[str, int | None], owner: str = "vllm") -> None:
        self.models = dict(models)  # id → max_model_len
        self.owner = owner
        self.bodies: list[bytes] = []
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.list_models),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        )

    async def list_models(self, request: Request) -> Response:
        data = []
        for model, length in self.models.items():
            entry: dict[str, Any] = {"id": model, "object": "model", "owned_by": self.owner}
            if length is not None:
                entry["max_model_len"] = length
            data.append(entry)
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Request) -> Response:
        body = await request.body()
        self.bodies.append(body)
        model = json.loads(body)["model"]
        if model not in self.models:
            message = f"The model `{model}` does not exist."
            return JSONResponse({"error": {"message": message}}, status_code=404)
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"I am {model}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            }
        )


def register(gateway: ThreadedServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway.url}/admin/register", json=body, headers=HEADERS, timeout=15)


def sdk(gateway: ThreadedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def ask(gateway: ThreadedServer, model: str) -> str | None:
    answer = sdk(gateway).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "who are you?"}]
    )
    return answer.choices[0].message.content


def listed(gateway: ThreadedServer, every: bool = False) -> dict[str, dict[str, Any]]:
    query = "?all=true" if every else ""
    data = httpx.get(f"{gateway.url}/v1/models{query}").json()["data"]
    return {entry["id"]: entry for entry in data}


def test_a_server_without_a_model_name_serves_every_model_it_lists(
    gateway: ThreadedServer,
) -> None:
    shelf = ModelShelf({"llama3.1:8b": 8192, "/models/qwen": None})
    with ThreadedServer(shelf.app) as backend:
        response = register(gateway, {"endpoint_url": backend.url})
        assert response.status_code == 201, response.text
        assert response.json()["served_models"] == ["llama3.1:8b", "/models/qwen"]

        assert ask(gateway, "llama3.1:8b") == "I am llama3.1:8b"
        assert ask(gateway, "/models/qwen") == "I am /models/qwen"
        # Forwarded byte for byte: no rewriting without backend_model.
        sent = b'{"model": "/models/qwen",  "messages": [{"role": "user", "content": "hi"}]}'
        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            content=sent,
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 200 and shelf.bodies[-1] == sent

        models = listed(gateway)
        assert set(models) == {"llama3.1:8b", "/models/qwen"}
        assert models["llama3.1:8b"]["max_model_len"] == 8192
        assert models["llama3.1:8b"]["owned_by"] == "vllm"
        assert models["llama3.1:8b"]["available_servers"] == 1
        assert "max_model_len" not in models["/models/qwen"]  # none reported, none made up
        # The SDK's models.retrieve, with a name that has slashes in it.
        retrieved = sdk(gateway).models.retrieve("/models/qwen")
        assert retrieved.id == "/models/qwen" and retrieved.owned_by == "vllm"
        missing = httpx.get(f"{gateway.url}/v1/models/nope")
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"

        detail = httpx.get(
            f"{gateway.url}/admin/servers/{response.json()['registration_id']}", headers=HEADERS
        ).json()
        assert detail["model_name"] is None and detail["source"] == "api"
        assert detail["served_models"] == ["llama3.1:8b", "/models/qwen"]


def test_the_smallest_context_length_is_listed_when_backends_differ(
    gateway: ThreadedServer,
) -> None:
    big, small = ModelShelf({"llama": 32768}), ModelShelf({"llama": 4096}, owner="ollama")
    with ThreadedServer(big.app) as first, ThreadedServer(small.app) as second:
        for backend in (first, second):
            assert register(gateway, {"endpoint_url": backend.url}).status_code == 201
        entry = listed(gateway)["llama"]
    assert entry["max_model_len"] == 4096 and entry["available_servers"] == 2


def test_a_named_model_the_backend_does_not_list_is_refused(gateway: ThreadedServer) -> None:
    shelf = ModelShelf({"llama3.1:8b": None, "qwen2": None})
    with ThreadedServer(shelf.app) as backend:
        response = register(gateway, {"model_name": "llama-3-8b", "endpoint_url": backend.url})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "model_name"
    assert "'llama-3-8b'" in error["message"] and "llama3.1:8b, qwen2" in error["message"]
    assert listed(gateway, every=True) == {}


def test_backend_model_renames_the_model_in_the_request(gateway: ThreadedServer) -> None:
    shelf = ModelShelf({"/models/Qwen2.5-7B-Instruct": 4096})
    with ThreadedServer(shelf.app) as backend:
        refused = register(
            gateway,
            {"model_name": "qwen", "backend_model": "/models/other", "endpoint_url": backend.url},
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "backend_model"
        response = register(
            gateway,
            {
                "model_name": "qwen",
                "backend_model": "/models/Qwen2.5-7B-Instruct",
                "endpoint_url": backend.url,
            },
        )
        assert response.status_code == 201, response.text
        assert response.json()["served_models"] == ["qwen"]

        answer = sdk(gateway).chat.completions.create(
            model="qwen",
            messages=[{"role": "user", "content": "héllo"}],
            temperature=0.25,
            extra_body={"top_k": 3},
        )
        assert answer.choices[0].message.content == "I am /models/Qwen2.5-7B-Instruct"
        sent = json.loads(shelf.bodies[-1])
        assert sent["model"] == "/models/Qwen2.5-7B-Instruct"
        assert sent["messages"] == [{"role": "user", "content": "héllo"}]
        assert (sent["temperature"], sent["top_k"]) == (0.25, 3)
        models = listed(gateway)
        assert set(models) == {"qwen"} and models["qwen"]["max_model_len"] == 4096


def test_an_update_can_name_a_model_or_serve_them_all(gateway: ThreadedServer) -> None:
    shelf = ModelShelf({"a": None, "b": None})
    with ThreadedServer(shelf.app) as backend:
        server_id = register(gateway, {"model_name": "a", "endpoint_url": backend.url}).json()[
            "registration_id"
        ]
        url = f"{gateway.url}/admin/register/{server_id}"
        refused = httpx.put(url, json={"model_name": "c"}, headers=HEADERS)
        assert refused.status_code == 400 and "'c'" in refused.json()["error"]["message"]
        assert set(listed(gateway)) == {"a"}

        every = httpx.put(url, json={"model_name": None}, headers=HEADERS)
        assert every.status_code == 200, every.text
        assert every.json()["served_models"] == ["a", "b"]
        assert set(listed(gateway)) == {"a", "b"}

        renamed = httpx.put(url, json={"model_name": "bee", "backend_model": "b"}, headers=HEADERS)
        assert renamed.status_code == 200, renamed.text
        assert set(listed(gateway)) == {"bee"}
        assert ask(gateway, "bee") == "I am b"


@pytest.fixture
def fast_health(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(health_check_interval_seconds=1, health_check_timeout_seconds=1)


async def test_healthd_keeps_the_served_models_in_sync(
    start_gateway: Callable[..., ThreadedServer], fast_health: Settings, database: Database
) -> None:
    """A model the backend adds is routable, one it drops is gone, within two health
    intervals; a named model the backend stops listing makes that registration unhealthy."""
    gateway = start_gateway()
    every, named = ModelShelf({"a": None}), ModelShelf({"n": None})
    with ThreadedServer(every.app) as backend, ThreadedServer(named.app) as other:
        assert register(gateway, {"endpoint_url": backend.url}).status_code == 201
        assert register(gateway, {"model_name": "n", "endpoint_url": other.url}).status_code == 201
        assert set(await _listed(gateway)) == {"a", "n"}
        async with running(fast_health, database):
            every.models = {"b": 2048}
            named.models = {"renamed": None}
            window = 2 * fast_health.health_check_interval_seconds + 1
            await until(lambda: set(_sync_listed(gateway)) == {"b"}, window, "a → b")
        every_models = _sync_listed(gateway, every=True)
        assert every_models["b"]["max_model_len"] == 2048
        assert every_models["n"]["available_servers"] == 0  # registered, no healthy server
        servers = httpx.get(
            f"{gateway.url}/admin/servers", params={"model": "n"}, headers=HEADERS
        ).json()
        assert [s["health_status"] for s in servers] == ["unhealthy"]
        assert "does not list model 'n'" in servers[0]["last_error"]
        assert servers[0]["reported_models"] == ["renamed"]


async def _listed(gateway: ThreadedServer) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        data = (await client.get(f"{gateway.url}/v1/models")).json()["data"]
    return {entry["id"]: entry for entry in data}


def _sync_listed(gateway: ThreadedServer, every: bool = False) -> dict[str, dict[str, Any]]:
    return listed(gateway, every)
