"""`auto` on real servers: the gateway reads what each backend reports and routes on it.

Fake vLLM-like backends (ScriptedBackend with a `/metrics` page the test writes)
under real uvicorn, the gateway in a real uvicorn too; requests through httpx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.conftest import ADMIN_KEY
from tests.fakes import ScriptedBackend
from tests.gateway.proxy.test_proxy import register, wait_routable
from tests.support import ThreadedServer, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}


def page(waiting: int, running: int) -> str:
    return (
        "# HELP vllm:num_requests_waiting Requests waiting.\n"
        f'vllm:num_requests_waiting{{model_name="m"}} {waiting}.0\n'
        f'vllm:num_requests_running{{model_name="m"}} {running}.0\n'
        'vllm:kv_cache_usage_perc{model_name="m"} 0.25\n'
    )


class Reporting(ScriptedBackend):
    """A ScriptedBackend that publishes `metrics` at /metrics (any text the test sets)."""

    def __init__(self, metrics: str) -> None:
        super().__init__("m")
        self.metrics = metrics
        self.scrapes = 0
        self.app.router.routes.append(Route("/metrics", self.page))

    async def page(self, request: Request) -> Response:
        self.scrapes += 1
        return PlainTextResponse(self.metrics)


@pytest.fixture
def reporting() -> Iterator[Callable[[str], tuple[Reporting, ThreadedServer]]]:
    running: list[ThreadedServer] = []

    def start(metrics: str) -> tuple[Reporting, ThreadedServer]:
        backend = Reporting(metrics)
        server = ThreadedServer(backend.app).__enter__()
        running.append(server)
        return backend, server

    yield start
    for server in running:
        server.__exit__(None, None, None)


@pytest.fixture
def proxy(start_gateway: Callable[..., ThreadedServer]) -> ThreadedServer:
    return start_gateway(rate_limit_per_minute=0, slow_start_seconds=0, routing_strategy="auto")


def served_by(proxy: ThreadedServer, body: dict[str, Any], **headers: str) -> str:
    response = httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.headers["x-gateway-server-id"]


def reported(proxy: ThreadedServer, registration_id: str) -> dict[str, Any] | None:
    detail = httpx.get(f"{proxy.url}/admin/servers/{registration_id}", headers=HEADERS).json()
    load: dict[str, Any] | None = detail["reported_load"]
    return load


def chat(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def test_auto_sends_requests_where_the_server_says_there_is_room(
    proxy: ThreadedServer, reporting: Callable[[str], tuple[Reporting, ThreadedServer]]
) -> None:
    busy, busy_server = reporting(page(waiting=40, running=8))
    idle, idle_server = reporting(page(waiting=0, running=1))
    busy_id = register(proxy, "m", busy_server.url)
    idle_id = register(proxy, "m", idle_server.url)
    wait_routable(proxy, "m", 2)
    wait_for(
        lambda: (reported(proxy, busy_id) or {}).get("waiting") == 40,
        timeout=5,
        what="the busy server's figures",
    )
    load = reported(proxy, idle_id)
    assert load is not None and load["source"] == "vllm" and load["running"] == 1
    assert load["kv_cache_usage"] == 0.25 and not load["stale"]
    # Different conversations, each its own key: all go where there is room.
    assert {served_by(proxy, chat(f"question {n}")) for n in range(12)} == {idle_id}
    # The figures turn around, and so does routing (within a scrape or two).
    busy.metrics, idle.metrics = page(0, 0), page(60, 8)
    wait_for(
        lambda: served_by(proxy, chat("again")) == busy_id, timeout=5, what="routing to follow"
    )
    stats = httpx.get(f"{proxy.url}/admin/stats?window=5m", headers=HEADERS).json()
    rows = {row["registration_id"]: row for row in stats["backends"]}
    assert rows[idle_id]["reported_load"]["waiting"] == 60


def test_a_conversation_stays_on_one_server_and_conversations_spread(
    proxy: ThreadedServer, reporting: Callable[[str], tuple[Reporting, ThreadedServer]]
) -> None:
    servers = [reporting(page(0, 0))[1] for _ in range(2)]
    for server in servers:
        register(proxy, "m", server.url)
    wait_routable(proxy, "m", 2)
    homes = set()
    for number in range(16):
        messages = [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"conversation {number}"},
        ]
        turns = set()
        for turn in range(4):
            turns.add(served_by(proxy, {"model": "m", "messages": messages}))
            messages += [
                {"role": "assistant", "content": f"answer {turn}"},
                {"role": "user", "content": f"follow-up {turn}"},
            ]
        assert len(turns) == 1, f"conversation {number} moved between servers"
        homes |= turns
    assert len(homes) == 2
    # A session id keeps requests together whatever their messages.
    assert len({served_by(proxy, chat(f"{n}"), **{"X-Session-ID": "s-7"}) for n in range(8)}) == 1


@pytest.mark.parametrize(
    "metrics",
    [
        "vllm:num_requests_running lots\n",  # malformed
        "<html>nothing here</html>",  # missing
        "vllm:num_requests_running 1\n" + "# padding\n" * 500_000,  # huge (5 MB)
    ],
    ids=["malformed", "missing", "huge"],
)
def test_unreadable_figures_fall_back_to_own_counts_and_never_fail_a_request(
    proxy: ThreadedServer,
    reporting: Callable[[str], tuple[Reporting, ThreadedServer]],
    metrics: str,
) -> None:
    bad, bad_server = reporting(metrics)
    _, good_server = reporting(page(0, 0))
    bad_id = register(proxy, "m", bad_server.url)
    register(proxy, "m", good_server.url)
    wait_routable(proxy, "m", 2)
    wait_for(lambda: bad.scrapes >= 1, timeout=5, what="a scrape of the bad server")
    wait_for(
        lambda: (reported(proxy, bad_id) or {}).get("problem") is not None,
        timeout=5,
        what="the problem to show",
    )
    load = reported(proxy, bad_id)
    assert load is not None and load["source"] is None and load["stale"]
    served = {served_by(proxy, chat(f"question {n}")) for n in range(10)}
    assert bad_id in served  # still routed to, by this worker's own counts
    scrapes = bad.scrapes
    wait_for(lambda: served_by(proxy, chat("x")) != "", timeout=1, what="one more request")
    assert bad.scrapes <= scrapes + 1  # not asked at every round: it is left alone a while


class OllamaLike(ScriptedBackend):
    """A ScriptedBackend that says, at /api/ps, which models it holds in memory (and has
    no /metrics, as Ollama has none)."""

    def __init__(self, model: str, loaded: list[str]) -> None:
        super().__init__(model)
        self.loaded = loaded
        self.app.router.routes.append(Route("/api/ps", self.ps))

    async def ps(self, request: Request) -> Response:
        models = [{"name": name, "model": name, "size": 1, "size_vram": 1} for name in self.loaded]
        return JSONResponse({"models": models})


def test_ollama_requests_go_where_the_model_is_loaded_and_api_ps_says_where(
    proxy: ThreadedServer,
) -> None:
    cold, warm = OllamaLike("llama3", ["qwen:7b"]), OllamaLike("llama3", ["llama3:latest"])
    with ThreadedServer(cold.app) as cold_server, ThreadedServer(warm.app) as warm_server:
        cold_id = register(proxy, "llama3", cold_server.url)
        warm_id = register(proxy, "llama3", warm_server.url)
        wait_routable(proxy, "llama3", 2)
        wait_for(
            lambda: (reported(proxy, cold_id) or {}).get("loaded_models") == ["qwen:7b"],
            timeout=5,
            what="the cold server's /api/ps",
        )
        body = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
        assert {served_by(proxy, {**body, "user": f"u{n}"}) for n in range(10)} == {warm_id}
        ps = httpx.get(f"{proxy.url}/api/ps").json()["models"]
        assert [(m["name"], m["servers"]) for m in ps] == [("llama3", [warm_id])]
        # The model moves (Ollama unloaded it here, loaded it there): so do requests.
        cold.loaded, warm.loaded = ["llama3:latest"], []
        wait_for(
            lambda: served_by(proxy, {**body, "user": "later"}) == cold_id,
            timeout=5,
            what="routing to follow the model",
        )
