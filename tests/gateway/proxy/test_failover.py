"""The failover matrix: every way a backend fails, before and after the first byte."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from shared.db import Database
from tests.fakes import ScriptedBackend
from tests.gateway.proxy.test_proxy import CHAT, health_of, register, wait_routable
from tests.healthd.test_daemon import add_server
from tests.support import ThreadedServer, wait_for

Started = tuple[ScriptedBackend, ThreadedServer]


@pytest.fixture
def proxy(start_gateway: Callable[..., ThreadedServer]) -> ThreadedServer:
    return start_gateway(
        rate_limit_per_minute=0, stream_idle_timeout_seconds=0.5, first_byte_timeout_seconds=0.5
    )


@pytest.fixture
def pair(proxy: ThreadedServer) -> Iterator[Callable[[str], tuple[Started, str, Started, str]]]:
    """A misbehaving backend in tier 0 (always tried first) and a good one in tier 1."""
    running: list[ThreadedServer] = []

    def make(behavior: str) -> tuple[Started, str, Started, str]:
        bad = ScriptedBackend("m", "ok")
        good = ScriptedBackend("m", "ok")
        bad_server = ThreadedServer(bad.app).__enter__()
        good_server = ThreadedServer(good.app).__enter__()
        running.extend([bad_server, good_server])
        bad_id = register(proxy, "m", bad_server.url, priority=0)
        good_id = register(proxy, "m", good_server.url, priority=1)
        wait_routable(proxy, "m", 2)
        bad.behavior = behavior
        return (bad, bad_server), bad_id, (good, good_server), good_id

    yield make
    for server in running:
        server.__exit__(None, None, None)


def post(proxy: ThreadedServer, stream: bool = False) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": stream}, timeout=20
    )


@pytest.mark.parametrize(
    ("behavior", "stream", "fault"),
    [
        ("error500", False, True),
        ("error500", True, True),
        ("error429", False, False),  # busy, not broken: fail over, never ejected
        ("sse_no_first_chunk", True, True),  # FIRST_BYTE_TIMEOUT_SECONDS before the first event
        ("drop_before_first_byte", True, True),
    ],
)
def test_failover_before_the_first_byte(
    proxy: ThreadedServer,
    pair: Callable[[str], tuple[Started, str, Started, str]],
    behavior: str,
    stream: bool,
    fault: bool,
) -> None:
    """TC-INF-004: the client never notices. A backend fault counts toward ejection
    (OUTLIER_CONSECUTIVE_FAILURES, 3): after the third the backend is no longer tried.
    Passive evidence never marks it unhealthy in the registry (healthd's job)."""
    (bad, _), bad_id, (good, _), good_id = pair(behavior)
    for sent in range(1, 5):
        response = post(proxy, stream)
        assert response.status_code == 200, response.text
        assert response.headers["x-gateway-server-id"] == good_id
        if stream:
            assert response.text.endswith("data: [DONE]\n\n")
        assert good.completions == sent
    assert bad.completions == (3 if fault else 4)
    assert health_of(proxy, bad_id) == "healthy"


def test_refused_connection_fails_over(
    proxy: ThreadedServer, pair: Callable[[str], tuple[Started, str, Started, str]]
) -> None:
    (_, bad_server), bad_id, _, good_id = pair("ok")
    bad_server.__exit__(None, None, None)  # the laptop closed
    response = post(proxy)
    assert response.status_code == 200
    assert response.headers["x-gateway-server-id"] == good_id
    assert health_of(proxy, bad_id) == "healthy"  # healthd decides that, not one request


def test_every_attempt_failing_is_502(
    proxy: ThreadedServer, pair: Callable[[str], tuple[Started, str, Started, str]]
) -> None:
    (_bad, _), _, (good, _), _ = pair("error500")
    good.behavior = "error500"
    response = post(proxy)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == 502
    assert "2 attempt(s)" in error["message"] and "HTTP 500" in error["message"]
    assert "127.0.0.1" not in error["message"]


def test_retries_are_bounded(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    gateway = start_gateway(rate_limit_per_minute=0, max_retry_attempts=1)
    backends = [ScriptedBackend("m", "ok") for _ in range(4)]
    servers = [ThreadedServer(b.app).__enter__() for b in backends]
    try:
        for server in servers:
            register(gateway, "m", server.url)
        wait_routable(gateway, "m", 4)
        for backend in backends:
            backend.behavior = "error500"
        response = post(gateway)
        assert response.status_code == 502
        assert sum(b.completions for b in backends) == 2  # first try + MAX_RETRY_ATTEMPTS
    finally:
        for server in servers:
            server.__exit__(None, None, None)


def test_client_errors_are_not_failed_over(
    proxy: ThreadedServer, pair: Callable[[str], tuple[Started, str, Started, str]]
) -> None:
    """A 4xx is the client's: returned as it is, no other backend tried, nobody marked."""
    (_bad, _), bad_id, (good, _), _ = pair("error400")
    response = post(proxy)
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "bad parameter"}}
    assert response.headers["x-gateway-server-id"] == bad_id
    assert good.completions == 0 and health_of(proxy, bad_id) == "healthy"


def _events(text: str) -> list[str]:
    return [block for block in text.split("\n\n") if block]


@pytest.mark.parametrize(
    ("behavior", "reason"),
    [("drop_mid_stream", "broke off"), ("stall_mid_stream", "silent for 0.5s")],
)
def test_mid_stream_failure_ends_with_an_error_event(
    proxy: ThreadedServer,
    pair: Callable[[str], tuple[Started, str, Started, str]],
    behavior: str,
    reason: str,
) -> None:
    """After bytes reached the client there is no failover: the stream ends with an
    OpenAI-shaped error event, promptly."""
    (_bad, _), bad_id, (good, _), _ = pair(behavior)
    response = post(proxy, stream=True)
    events = _events(response.text)
    assert events[0].startswith("data: {") and "part0" in events[0]
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert reason in error["message"] and error["code"] in (502, 504)
    assert "[DONE]" not in response.text
    assert good.completions == 0
    assert health_of(proxy, bad_id) == "healthy"


def test_mid_stream_failure_reaches_the_sdk_as_an_error(
    proxy: ThreadedServer, pair: Callable[[str], tuple[Started, str, Started, str]]
) -> None:
    pair("drop_mid_stream")
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0)
    received: list[Any] = []
    with pytest.raises(openai.APIError, match="mid-stream"):
        for chunk in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            received.append(chunk)
    assert len(received) == 2


def test_malformed_event_is_passed_on(
    proxy: ThreadedServer, pair: Callable[[str], tuple[Started, str, Started, str]]
) -> None:
    (_bad, _), bad_id, _, _ = pair("malformed_chunk")
    response = post(proxy, stream=True)
    assert "data: {this is not json" in response.text
    assert response.text.endswith("data: [DONE]\n\n")
    assert health_of(proxy, bad_id) == "healthy"


def test_client_disconnect_cancels_the_upstream_stream(
    proxy: ThreadedServer, pair: Callable[[str], tuple[Started, str, Started, str]]
) -> None:
    (bad, _), bad_id, _, _ = pair("slow_stream")
    with httpx.stream(
        "POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=10
    ) as response:
        next(response.iter_raw())  # the first event arrived; now hang up
    wait_for(lambda: bad.streams_cancelled == 1, timeout=5, what="the backend to stop")
    # The client left; the backend did nothing wrong and still serves.
    bad.behavior = "ok"
    answer = post(proxy)
    assert answer.status_code == 200 and answer.headers["x-gateway-server-id"] == bad_id
    assert health_of(proxy, bad_id) == "healthy"


def test_a_backend_name_rebound_to_a_private_address_is_not_connected(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    """Registered while its name was public; now the name resolves inside the network.
    The gateway refuses to connect (502 naming why, no address shown)."""

    async def rebound(host: str, port: int) -> list[str]:
        return ["10.20.30.40"]

    gateway = start_gateway(resolver=rebound, rate_limit_per_minute=0, allow_private_backends=False)
    server_id = add_server(database, "http://backend.test:8000", health_status="healthy")
    wait_routable(gateway, "m", 1)
    response = post(gateway)
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "points to a private address" in message and "10.20.30.40" not in message
    assert health_of(gateway, server_id) == "healthy"
