"""A token per registration, registration keys, and drain (#14 items 1 and 6)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.admin.auth import managed_registration
from gateway.cli.demo_backend import create_demo_app
from tests.conftest import ADMIN_KEY
from tests.fakes import ScriptedBackend
from tests.support import ThreadedServer, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}
CLASS_KEY = "class-registration-key-2026"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("PUT", "/admin/register/abc", "abc"),
        ("DELETE", "/admin/register/abc", "abc"),
        ("GET", "/admin/servers/abc", "abc"),
        ("POST", "/admin/servers/abc/drain", "abc"),
        ("POST", "/admin/servers/abc/undrain", "abc"),
        ("POST", "/admin/servers/abc/check", "abc"),
        ("GET", "/admin/servers", None),
        ("POST", "/admin/register", None),
        ("GET", "/admin/register/abc", None),
        ("DELETE", "/admin/servers/abc", None),
        ("GET", "/admin/logs", None),
        ("POST", "/admin/servers/abc/drain/x", None),
        ("POST", "/admin/leases/abc/ack", "abc"),
        ("GET", "/admin/leases/abc/ack", None),
        ("POST", "/admin/leases", None),
    ],
)
def test_what_a_management_token_may_touch(method: str, path: str, expected: str | None) -> None:
    assert managed_registration(method, path) == expected


def register(
    gateway: ThreadedServer, url: str, headers: dict[str, str] = HEADERS
) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/admin/register", json={"endpoint_url": url}, headers=headers, timeout=15
    )


def test_a_token_manages_its_own_registration_and_no_other(
    start_gateway: Callable[..., ThreadedServer], tmp_path: Path
) -> None:
    gateway = start_gateway(registration_keys=[CLASS_KEY])
    with (
        ThreadedServer(create_demo_app("a")) as first,
        ThreadedServer(create_demo_app("b")) as second,
    ):
        mine = register(gateway, first.url, {"X-API-Key": CLASS_KEY})  # a class's shared key
        assert mine.status_code == 201, mine.text
        token, mine_id = mine.json()["management_token"], mine.json()["registration_id"]
        theirs_id = register(gateway, second.url).json()["registration_id"]
        assert token.startswith("mgt_") and len(token) > 40

        own = {"X-Management-Token": token}
        shown = httpx.get(f"{gateway.url}/admin/servers/{mine_id}", headers=own)
        assert shown.status_code == 200 and token not in shown.text
        updated = httpx.put(
            f"{gateway.url}/admin/register/{mine_id}", json={"weight": 3}, headers=own
        )
        assert updated.status_code == 200 and updated.json()["weight"] == 3

        for method, path in (
            ("PUT", f"/admin/register/{theirs_id}"),
            ("DELETE", f"/admin/register/{theirs_id}"),
            ("POST", f"/admin/servers/{theirs_id}/drain"),
            ("GET", "/admin/logs"),
        ):
            refused = httpx.request(method, f"{gateway.url}{path}", headers=own, json={"weight": 2})
            assert refused.status_code == 403, (method, path, refused.text)
            assert token not in refused.text
        # The list is its own registration alone (#21 item 2).
        listed = httpx.get(f"{gateway.url}/admin/servers", headers=own)
        assert [s["registration_id"] for s in listed.json()] == [mine_id]
        wrong = httpx.get(
            f"{gateway.url}/admin/servers/{mine_id}", headers={"X-Management-Token": "mgt_guess"}
        )
        assert wrong.status_code == 403

        # The class key registers, and does nothing else.
        for method, path in (("GET", "/admin/servers"), ("DELETE", f"/admin/register/{theirs_id}")):
            refused = httpx.request(
                method, f"{gateway.url}{path}", headers={"X-API-Key": CLASS_KEY}
            )
            assert refused.status_code == 403 and "only register" in refused.text

        gone = httpx.delete(f"{gateway.url}/admin/register/{mine_id}", headers=own)
        assert gone.status_code == 200
        again = httpx.get(f"{gateway.url}/admin/servers/{mine_id}", headers=own)
        assert again.status_code == 403  # a deregistered registration's token manages nothing
    logged = "".join(path.read_text() for path in (tmp_path / "logs").glob("*.log"))
    assert "server registered" in logged and token not in logged


def test_drain_stops_new_requests_and_lets_one_in_flight_finish(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    # Round robin: under `auto` the same conversation sticks to one backend, and the
    # loop below (until one stream reaches the slow backend) could spin into the rate
    # limit instead.
    gateway = start_gateway(routing_strategy="round_robin")
    slow, other = ScriptedBackend("m", behavior="slow_stream"), ScriptedBackend("m")
    with ThreadedServer(slow.app) as first, ThreadedServer(other.app) as second:
        slow_id = register(gateway, first.url).json()["registration_id"]
        register(gateway, second.url)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}

        def first_backend_streams() -> bool:
            return slow.completions > 0

        finished: list[bytes] = []

        def stream_until_one_reaches_the_slow_backend() -> None:
            while not first_backend_streams():
                with httpx.stream(
                    "POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=30
                ) as response:
                    data = response.read()
                    if slow.completions and b"[DONE]" in data:
                        finished.append(data)

        worker = threading.Thread(target=stream_until_one_reaches_the_slow_backend)
        worker.start()
        wait_for(first_backend_streams, what="a stream on the backend to drain")
        drained = httpx.post(f"{gateway.url}/admin/servers/{slow_id}/drain", headers=HEADERS)
        assert drained.status_code == 200 and drained.json()["draining"] is True
        before = slow.completions
        plain = {**body, "stream": False}
        for _ in range(6):
            assert httpx.post(f"{gateway.url}/v1/chat/completions", json=plain).status_code == 200
        assert slow.completions == before  # nothing new went to the drained backend
        worker.join(timeout=30)
        assert finished and finished[0].rstrip().endswith(b"[DONE]")  # in flight: finished
        listed = httpx.get(f"{gateway.url}/v1/models").json()["data"]
        assert listed[0]["available_servers"] == 1

        resumed = httpx.post(f"{gateway.url}/admin/servers/{slow_id}/undrain", headers=HEADERS)
        assert resumed.status_code == 200 and resumed.json()["draining"] is False
        wait_for(
            lambda: (
                httpx.get(f"{gateway.url}/v1/models").json()["data"][0]["available_servers"] == 2
            ),
            what="the backend routable again",
        )
