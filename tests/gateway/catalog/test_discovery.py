"""Discovery for clients and the Python client (#14 items 4 and 5), against fake backends."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from gateway.cli.demo_backend import create_demo_app
from gateway.client import Client, ConnectionMode
from tests.conftest import ADMIN_KEY
from tests.gateway.proxy.test_apis import register
from tests.support import ThreadedServer, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}
HELLO = [{"role": "user", "content": "hi"}]


def test_the_registry_shows_no_urls_and_no_keys(gateway: ThreadedServer) -> None:
    with ThreadedServer(create_demo_app("llama3")) as backend:
        replica = register(
            gateway,
            backend.url,
            api_key="backend-secret-123",
            tags=["gpu"],
            metadata={"student_id": "alice"},
        )
        answer = httpx.get(f"{gateway.url}/registry")
    assert answer.status_code == 200
    assert answer.json() == {
        "models": {
            "llama3": [
                {
                    "replica_id": replica,
                    "health": "healthy",
                    "draining": False,
                    "tags": ["gpu"],
                    "owner": "alice",
                }
            ]
        },
        "claims": {},
    }
    assert backend.url not in answer.text and "backend-secret-123" not in answer.text
    off = httpx.get(f"{gateway.url}/route", params={"model": "llama3"})
    assert off.status_code == 404 and "DISCOVERY_DIRECT" in off.json()["error"]["message"]


def test_route_picks_a_keyless_replica_with_the_tags(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    gateway = start_gateway(discovery_direct=True)
    with (
        ThreadedServer(create_demo_app("llama3")) as plain,
        ThreadedServer(create_demo_app("llama3")) as gpu,
        ThreadedServer(create_demo_app("llama3")) as keyed,
    ):
        register(gateway, plain.url)
        gpu_id = register(gateway, gpu.url, tags=["gpu"])
        register(gateway, keyed.url, tags=["gpu"], api_key="never-leaves-the-gateway")
        for _ in range(6):  # the keyed replica is never offered
            found = httpx.get(f"{gateway.url}/route", params={"model": "llama3", "tags": "gpu"})
            assert found.json() == {"endpoint": gpu.url, "replica_id": gpu_id, "model": "llama3"}
        assert httpx.get(f"{gateway.url}/route").status_code == 400
        missing = httpx.get(f"{gateway.url}/route", params={"model": "nope"})
        assert missing.status_code == 404
        none = httpx.get(f"{gateway.url}/route", params={"model": "llama3", "tags": "tpu"})
        assert none.status_code == 503


def test_the_client_in_both_modes(start_gateway: Callable[..., ThreadedServer]) -> None:
    gateway = start_gateway(discovery_direct=True, routing_strategy="round_robin")
    first = ThreadedServer(create_demo_app("llama3", chunk_interval_ms=0)).__enter__()
    second = ThreadedServer(create_demo_app("llama3", chunk_interval_ms=0)).__enter__()
    try:
        direct = Client(endpoint=gateway.url)
        assert direct.mode is ConnectionMode.DIRECT and direct.endpoint == gateway.url
        register(gateway, first.url)
        answer = direct.chat(HELLO, model="llama3")
        assert answer.choices[0].message.content
        assert isinstance(direct.openai, openai.OpenAI)

        found = Client(api_server=gateway.url, capability={"model": "llama3"})
        assert found.mode is ConnectionMode.DISCOVERY and found.endpoint is None  # lazy
        assert found.chat(HELLO).choices[0].message.content
        assert found.endpoint == first.url and found.replica_id is not None
        first_replica = found.replica_id

        # The replica goes away; another comes: one re-discovery, one retry.
        second_id = register(gateway, second.url)
        first.__exit__(None, None, None)
        httpx.delete(f"{gateway.url}/admin/register/{first_replica}", headers=HEADERS)

        def only_the_second() -> bool:
            found_now = httpx.get(f"{gateway.url}/route", params={"model": "llama3"}).json()
            return bool(found_now["replica_id"] == second_id)

        wait_for(only_the_second, what="only the second replica routable")
        assert found.chat(HELLO).choices[0].message.content
        assert (found.endpoint, found.replica_id) == (second.url, second_id)
        found.close()
    finally:
        first.__exit__(None, None, None)  # (a second stop changes nothing)
        second.__exit__(None, None, None)


def test_the_client_refuses_a_muddled_setup() -> None:
    with pytest.raises(ValueError):
        Client()
    with pytest.raises(ValueError):
        Client(endpoint="http://a", api_server="http://b")
    with pytest.raises(ValueError):
        Client(api_server="http://b", capability={"tags": ["gpu"]})
