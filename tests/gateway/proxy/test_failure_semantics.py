"""What every kind of backend failure gives the client and the pool, against raw-socket
backends that break exactly where each case says, through the unmodified `openai` SDK
where the client library matters."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from tests.gateway.proxy.test_proxy import CHAT, register, wait_routable
from tests.raw_backend import (
    LAST_CHUNK,
    SSE_HEAD,
    Close,
    Hold,
    RawBackend,
    Reset,
    Script,
    Seen,
    Sleep,
    Step,
    Write,
    chunk_event,
    chunked,
    completion,
    http,
    ok,
)
from tests.support import ThreadedServer

Backends = Callable[..., list[RawBackend]]


@pytest.fixture
def gateway(start_gateway: Callable[..., ThreadedServer]) -> ThreadedServer:
    return start_gateway(
        rate_limit_per_minute=0, slow_start_seconds=0, stream_idle_timeout_seconds=0.5
    )


@pytest.fixture
def backends(gateway: ThreadedServer) -> Iterator[Backends]:
    """Raw backends registered for model `m`, the first in the first priority tier."""
    running: list[RawBackend] = []

    def start(*scripts: Script, into: ThreadedServer | None = None) -> list[RawBackend]:
        target = into or gateway
        started = [RawBackend(script).__enter__() for script in scripts]
        running.extend(started)
        for tier, backend in enumerate(started):
            register(target, "m", backend.url, priority=tier)
        wait_routable(target, "m", len(started))
        return started

    yield start
    for backend in running:
        backend.__exit__(None, None, None)


def post(gateway: ThreadedServer, **body: object) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, **body}, timeout=20)


def sdk(gateway: ThreadedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)


def test_a_post_reaches_a_backend_at_most_once(gateway: ThreadedServer, backends: Backends) -> None:
    """The backend reads the request on a kept-alive connection, then resets: the
    gateway must not send it again on a new connection (the backend may be
    generating); it counts as one attempt and goes to another backend."""

    def ok_then_reset(seen: Seen) -> list[Step]:
        # (POSTs only: the gateway may also read the backend's /metrics meanwhile)
        return [Write(http(200, completion()))] if first.posts == 1 else [Reset()]

    first, second = backends(ok_then_reset, ok)
    assert post(gateway).status_code == 200  # leaves a kept-alive connection
    response = post(gateway)
    assert response.status_code == 200
    assert first.posts == 2 and second.posts == 1


EVENT_1 = chunk_event("one ")
EVENT_2 = chunk_event("two ")
CUTS = {
    "between events": 0,
    "inside the field name": 2,
    "after the field name": 6,
    "inside the data": len(EVENT_2) // 2,
    "between the two line ends": len(EVENT_2) - 1,
}


@pytest.mark.parametrize("ending", [Reset(), Close()], ids=["reset", "closed"])
@pytest.mark.parametrize("cut", CUTS.values(), ids=list(CUTS))
def test_a_stream_broken_anywhere_ends_with_an_error_the_sdk_raises(
    gateway: ThreadedServer, backends: Backends, cut: int, ending: Step
) -> None:
    """Only whole events reach the client; the partial one is dropped and the stream ends
    with an error event, so the SDK raises instead of ending a truncated answer normally."""
    steps: list[Step] = [Write(SSE_HEAD + chunked(EVENT_1))]
    if cut:
        steps.append(Write(chunked(EVENT_2[:cut])))
    backends(lambda seen: [*steps, ending])
    received: list[str] = []
    with pytest.raises(openai.APIError, match="mid-stream"):
        for chunk in sdk(gateway).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            received.append(chunk.choices[0].delta.content or "")
    assert received == ["one "]
    raw = post(gateway, stream=True).text
    assert raw.startswith(EVENT_1.decode()) and raw.count("data: ") == 2
    assert '"code": 502' in raw


@pytest.mark.parametrize(
    "steps",
    [
        [
            Write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b'{"id": "x",'),
            Reset(),
        ],
        [Write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"id": "x",'), Close()],
        [
            Write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b'{"id"')),
            Close(),
        ],
    ],
    ids=["close-delimited, reset", "shorter than its length", "chunked without its last chunk"],
)
def test_a_truncated_answer_is_an_error_not_a_200(
    gateway: ThreadedServer, backends: Backends, steps: list[Step]
) -> None:
    backends(lambda seen: steps)
    response = post(gateway)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "server_error"


def test_a_long_prefill_is_not_an_idle_stream(
    start_gateway: Callable[..., ThreadedServer], backends: Backends
) -> None:
    """The first event may take up to FIRST_BYTE_TIMEOUT_SECONDS, however short
    STREAM_IDLE_TIMEOUT_SECONDS is; only then is it a timeout (504, not retried here)."""
    steps: list[Step] = [
        Write(SSE_HEAD),
        Sleep(1.2),
        Write(chunked(EVENT_1) + chunked(b"data: [DONE]\n\n") + LAST_CHUNK),
    ]
    patient = start_gateway(
        rate_limit_per_minute=0, stream_idle_timeout_seconds=0.3, first_byte_timeout_seconds=5
    )
    backends(lambda seen: steps, into=patient)
    response = post(patient, stream=True)
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")

    hasty = start_gateway(  # the same registry: the same backend
        rate_limit_per_minute=0, stream_idle_timeout_seconds=5, first_byte_timeout_seconds=0.3
    )
    wait_routable(hasty, "m", 1)
    response = post(hasty, stream=True)
    assert response.status_code == 504
    assert "FIRST_BYTE_TIMEOUT_SECONDS" in response.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream before its first event"])
def test_the_client_leaving_closes_the_backends_connection(
    gateway: ThreadedServer, backends: Backends, stream: bool
) -> None:
    """A client that gives up (a timeout, a closed tab) must not leave the backend
    generating: its connection is closed within a second of the client's."""
    head = SSE_HEAD if stream else b""
    (backend,) = backends(lambda seen: [Write(head), Hold()] if head else [Hold()])
    with pytest.raises(httpx.ReadTimeout):
        post_with_timeout(gateway, 0.5, stream=stream)
    client_left = time.monotonic()
    assert backend.wait_client_closed() - client_left < 1.0


def post_with_timeout(gateway: ThreadedServer, timeout: float, **body: object) -> None:
    with httpx.Client(timeout=timeout) as client:
        client.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, **body})


def test_a_redirect_is_never_relayed(gateway: ThreadedServer, backends: Backends) -> None:
    backends(lambda seen: [Write(http(302, b"", "Location: http://127.0.0.1:1/elsewhere"))])
    response = post(gateway)
    assert response.status_code == 502
    assert "location" not in response.headers
    assert "redirect" in response.json()["error"]["message"]


def test_a_backends_cors_headers_and_cookies_stay_behind(
    gateway: ThreadedServer, backends: Backends
) -> None:
    answer = http(
        200,
        completion(),
        "Access-Control-Allow-Origin: https://other.example",
        "Set-Cookie: session=backend",
        "Server: some-backend/1.0",
    )
    backends(lambda seen: [Write(answer)])
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Origin": "https://a.example"}
    )
    assert response.status_code == 200
    assert response.headers.get_list("access-control-allow-origin") == ["*"]
    assert "set-cookie" not in response.headers
    assert response.headers.get("server") != "some-backend/1.0"


def test_every_backend_busy_is_429_with_the_soonest_retry(
    gateway: ThreadedServer, backends: Backends
) -> None:
    busy = [http(429, b'{"error": "busy"}', f"Retry-After: {seconds}") for seconds in (7, 3)]
    backends(lambda seen: [Write(busy[0])], lambda seen: [Write(busy[1])])
    with pytest.raises(openai.RateLimitError):
        sdk(gateway).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    response = post(gateway)
    assert response.status_code == 429 and response.headers["retry-after"] == "3"


def test_every_backend_refusing_is_502_not_a_timeout(
    gateway: ThreadedServer, backends: Backends
) -> None:
    first, second = backends(ok, ok)
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    response = post(gateway)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "server_error" and "refused" in error["message"]


def test_a_poisoned_prompt_does_not_take_the_model_down(
    gateway: ThreadedServer, backends: Backends
) -> None:
    """A prompt that makes every backend answer 500, sent again and again between clean
    ones: every clean request still succeeds (no one-strike ejection, and never the
    whole model on passive evidence)."""

    def poisoned_500(seen: Seen) -> list[Step]:
        if b"POISON" in seen.body:
            return [Write(http(500, b'{"error": "the prompt broke me"}'))]
        return [Write(http(200, completion()))]

    backends(poisoned_500, poisoned_500)
    statuses = []
    for _ in range(10):
        statuses.append(post(gateway, messages=[{"role": "user", "content": "POISON"}]).status_code)
        statuses.append(post(gateway).status_code)
    assert statuses[1::2] == [200] * 10
    assert statuses[0::2] == [502] * 10
    # Even poison alone, many times in a row, leaves the model a backend to try.
    for _ in range(6):
        post(gateway, messages=[{"role": "user", "content": "POISON"}])
    assert post(gateway).status_code == 200


def test_a_backend_without_the_endpoint_hands_the_request_on(
    gateway: ThreadedServer, backends: Backends
) -> None:
    """A chat-only backend asked for embeddings answers 404: not unhealthy, not ejected,
    just remembered as lacking /v1/embeddings, so the next requests go straight to the
    backend that has it. With no other backend, its own 404 is passed on (in the
    OpenAI shape, saying which path it lacks)."""

    def chat_only(seen: Seen) -> list[Step]:
        if seen.path.endswith("/embeddings"):
            return [Write(http(404, b'{"detail": "Not Found"}'))]
        return [Write(http(200, completion()))]

    embedding = json.dumps({"object": "list", "data": [{"embedding": [0.1]}]}).encode()
    chat_backend, embedding_backend = backends(
        chat_only, lambda seen: [Write(http(200, embedding))]
    )
    request = {"model": "m", "input": "hello"}
    for _ in range(3):
        response = httpx.post(f"{gateway.url}/v1/embeddings", json=request)
        assert response.status_code == 200 and response.json()["data"]
    assert chat_backend.posts == 1 and embedding_backend.posts == 3
    assert post(gateway).status_code == 200  # chat still goes to the first tier
    assert chat_backend.posts == 2

    embedding_backend.__exit__(None, None, None)
    response = httpx.post(f"{gateway.url}/v1/embeddings", json=request)
    assert response.status_code == 404  # only the one lacking it is left: its answer,
    error = response.json()["error"]  # in the OpenAI shape, naming what it lacks
    assert error["message"] == "the backend does not offer /v1/embeddings (HTTP 404)"
    assert error["type"] == "not_found_error"
