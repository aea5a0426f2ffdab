"""A host sees its own usage with its token (#21 item 2): its registration's requests,
tokens, errors and latency, through the API, `gateway-admin stats|servers
--management-token` (real processes) and the server page; nothing of other hosts."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import httpx

from gateway.cli.demo_backend import create_demo_app
from tests.support import BIN, ThreadedServer, clean_environment, wait_for

CLASS_KEY = "class-registration-key-2026"


def join(gateway: ThreadedServer, backend: ThreadedServer, model: str) -> tuple[str, str]:
    answer = httpx.post(
        f"{gateway.url}/admin/register",
        json={"endpoint_url": backend.url, "model_name": model},
        headers={"X-API-Key": CLASS_KEY},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["registration_id"], answer.json()["management_token"]


def chat(gateway: ThreadedServer, model: str) -> None:
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 200, answer.text


def stats_with(gateway: ThreadedServer, token: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{gateway.url}/admin/stats",
        params={"window": "5m", **params},
        headers={"X-Management-Token": token},
    )


def cli(gateway: ThreadedServer, token: str, *command: str) -> str:
    done = subprocess.run(
        [str(BIN / "gateway-admin"), *command, "--url", gateway.url, "--management-token", token],
        env=clean_environment({}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_hosts_token_reads_its_own_usage_and_nothing_else(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    gateway = start_gateway(registration_keys=[CLASS_KEY], rate_limit_per_minute=0)
    with (
        ThreadedServer(create_demo_app("alpha", chunk_interval_ms=0)) as first,
        ThreadedServer(create_demo_app("beta", chunk_interval_ms=0)) as second,
    ):
        mine, token = join(gateway, first, "alpha")
        theirs, _ = join(gateway, second, "beta")
        for _ in range(3):
            chat(gateway, "alpha")
        for _ in range(5):
            chat(gateway, "beta")

        def counted() -> dict[str, Any] | None:
            answer = stats_with(gateway, token)
            assert answer.status_code == 200, answer.text
            document: dict[str, Any] = answer.json()
            return document if document["totals"]["requests"] == 3 else None

        own = wait_for(counted, timeout=15, what="the host's three requests counted")
        assert [row["registration_id"] for row in own["backends"]] == [mine]
        assert list(own["models"]) == ["alpha"]
        assert own["backends"][0]["completion_tokens"] > 0
        assert theirs not in str(own) and "beta" not in str(own)
        for params in ({"backend": theirs}, {"owner": "bob"}):
            assert stats_with(gateway, token, **params).status_code == 403

        listed = httpx.get(f"{gateway.url}/admin/servers", headers={"X-Management-Token": token})
        assert [s["registration_id"] for s in listed.json()] == [mine]

        shown = cli(gateway, token, "stats", "--window", "5m")
        assert mine[:8] in shown and theirs[:8] not in shown and "beta" not in shown
        servers = cli(gateway, token, "servers")
        assert mine in servers and theirs not in servers
