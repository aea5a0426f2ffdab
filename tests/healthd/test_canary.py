"""Canaries (#21 item 5): a server that lists a model but cannot generate with it (500,
or an answer naming another model) is unhealthy for that model within two checks,
with the reason; a good one is untouched; canary traffic is 1 token at temperature 0,
counted, and never a cold load on a server that loads models on demand."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from healthd.canary import judge, same_model, to_check
from shared.db import Database
from shared.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.healthd.test_daemon import running, until
from tests.support import ThreadedServer

ADMIN = {"X-API-Key": ADMIN_KEY}
ANSWER = {"id": "x", "object": "chat.completion", "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "OK"},
                       "finish_reason": "length"}]}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, json.dumps(ANSWER).encode(), (True, None)),
        (200, json.dumps({**ANSWER, "model": "m:latest"}).encode(), (True, None)),
        (500, b"boom", (False, "the canary generation answered HTTP 500")),
        (200, json.dumps({**ANSWER, "choices": []}).encode(), (False, "empty")),
        (200, json.dumps({**ANSWER, "model": "other"}).encode(), (False, "names 'other'")),
        (200, b"<html>", (False, "not JSON")),
        (404, b"", (None, None)),  # not a chat model: not judged
        (429, b"", (False, "HTTP 429")),
    ],
)
def test_what_a_canary_answer_says(
    status: int, body: bytes, expected: tuple[bool | None, str | None]
) -> None:
    ok, reason = judge("m", status, body)
    assert ok is expected[0]
    assert (reason is None) if expected[1] is None else (expected[1] in str(reason))


@pytest.mark.parametrize(
    ("asked", "answered", "same"),
    [("llama3", "llama3:latest", True), ("/models/llama", "llama", True),
     ("m", None, True), ("m", "other", False), ("llama3:8b", "llama3:70b", False)],
)  # fmt: skip
def test_same_model(asked: str, answered: str | None, same: bool) -> None:
    assert same_model(asked, answered) is same


SERVED = [("a", "a"), ("b", "b:latest"), ("c", "c"), ("d", "d"), ("e", "e")]


@pytest.mark.parametrize(
    ("loaded", "recent", "turn", "expected"),
    [
        (None, set(), 0, ["a", "b", "c", "d"]),  # all loaded: up to 4 a round
        (None, set(), 1, ["e", "a", "b", "c"]),  # taking turns
        ({"b"}, set(), 0, ["b"]),  # on demand: only what is loaded now
        ({"b:latest"}, {"d"}, 0, ["b", "d"]),  # ... or served recently
        (set(), set(), 0, []),  # nothing loaded: no canary, no cold load
    ],
)
def test_which_models_a_round_checks(
    loaded: set[str] | None, recent: set[str], turn: int, expected: list[str]
) -> None:
    assert [name for name, _ in to_check(SERVED, loaded, recent, turn)] == expected


class Backend:
    """Lists `models`; chat answers as `mode` says; optionally Ollama's /api/ps."""

    def __init__(self, models: list[str], mode: str = "good", loaded: list[str] | None = None):
        self.models, self.mode, self.loaded = models, mode, loaded
        self.canaries: list[dict[str, Any]] = []
        routes = [
            Route("/v1/models", self.list_models),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
        ]
        if loaded is not None:
            routes.append(Route("/api/ps", self.ps))
        self.app = Starlette(routes=routes)

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": m} for m in self.models]})

    async def ps(self, request: Request) -> Response:
        return JSONResponse({"models": [{"name": m, "model": m} for m in self.loaded or []]})

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        if "canary" in request.headers.get("user-agent", ""):  # healthd's, not a client's
            self.canaries.append(body)
        if self.mode == "500":
            return JSONResponse({"error": "model failed to load"}, status_code=500)
        model = "someone-else" if self.mode == "liar" else body["model"]
        return JSONResponse({**ANSWER, "model": model})


def register(gateway: ThreadedServer, url: str) -> str:
    answer = httpx.post(f"{gateway.url}/admin/register", json={"endpoint_url": url}, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    registration_id: str = answer.json()["registration_id"]
    return registration_id


def shown(gateway: ThreadedServer, registration_id: str) -> dict[str, Any]:
    detail: dict[str, Any] = httpx.get(
        f"{gateway.url}/admin/servers/{registration_id}", headers=ADMIN
    ).json()
    return detail


async def test_a_server_that_cannot_generate_is_unhealthy_for_that_model(
    start_gateway: Callable[..., ThreadedServer],
    make_settings: Callable[..., Settings],
    database: Database,
) -> None:
    gateway = start_gateway()
    settings = make_settings(health_check_interval_seconds=1, canary_every_checks=2)
    good, broken, liar = Backend(["m"]), Backend(["m"], "500"), Backend(["m"], "liar")
    ondemand = Backend(["hot", "cold"], loaded=["hot:latest"])
    with (
        ThreadedServer(good.app) as good_server,
        ThreadedServer(broken.app) as broken_server,
        ThreadedServer(liar.app) as liar_server,
        ThreadedServer(ondemand.app) as ondemand_server,
    ):
        ids = {
            name: register(gateway, server.url)
            for name, server in (("good", good_server), ("broken", broken_server),
                                 ("liar", liar_server), ("ondemand", ondemand_server))
        }  # fmt: skip
        async with running(settings, database):
            # The first check sends canaries: the verdict comes within two checks.
            await until(
                lambda: all(shown(gateway, ids[n])["model_faults"] for n in ("broken", "liar")),
                5,
                "the broken and the lying server unhealthy for m",
            )
            await until(lambda: len(good.canaries) >= 2, 10, "a second round (every 2nd check)")
        faults = {name: shown(gateway, ids[name])["model_faults"] for name in ids}
        assert faults["good"] == {} and faults["ondemand"] == {}
        assert "HTTP 500" in faults["broken"]["m"]
        assert "'someone-else'" in faults["liar"]["m"]
        # Routing follows: m has one healthy server, the good one.
        models = httpx.get(f"{gateway.url}/v1/models").json()["data"]
        assert [(e["id"], e["available_servers"]) for e in models if e["id"] == "m"] == [("m", 1)]
        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert answer.headers["x-gateway-server-id"] == ids["good"]
    # Bounded and visible: 1 token at temperature 0, every 2nd check; no cold load.
    for canary in [*good.canaries, *broken.canaries, *ondemand.canaries]:
        assert canary["max_tokens"] == 1 and canary["temperature"] == 0
    assert {c["model"] for c in ondemand.canaries} == {"hot"}
    assert shown(gateway, ids["good"])["canaries_sent"] == len(good.canaries)
    assert shown(gateway, ids["good"])["health_status"] == "healthy"
    assert shown(gateway, ids["broken"])["health_status"] == "healthy"  # its list answers
