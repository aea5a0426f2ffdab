"""The proxy over real HTTP: the openai SDK, byte-for-byte forwarding, errors, failover."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from sqlalchemy import select, update

from shared.db import Database
from shared.models import BackendUsage, ModelServer
from tests.conftest import ADMIN_KEY
from tests.fakes import ScriptedBackend
from tests.support import ThreadedServer, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def register(gateway: ThreadedServer, model: str, url: str, **extra: Any) -> str:
    response = httpx.post(
        f"{gateway.url}/admin/register",
        json={"model_name": model, "endpoint_url": url, **extra},
        headers=HEADERS,
        timeout=15,
    )
    assert response.status_code == 201, response.text
    registration_id: str = response.json()["registration_id"]
    return registration_id


def register_routable(gateway: ThreadedServer, url: str, **extra: Any) -> str:
    """Register the only backend of model "m" and wait until the gateway routes to it."""
    registration_id = register(gateway, "m", url, **extra)
    wait_routable(gateway, "m", 1)
    return registration_id


def available(gateway: ThreadedServer, model: str) -> int:
    for entry in httpx.get(f"{gateway.url}/v1/models?all=true").json()["data"]:
        if entry["id"] == model:
            count: int = entry["available_servers"]
            return count
    return -1


def set_health(database: Database, registration_id: str, status: str) -> None:
    """Write a health status as healthd would."""
    with database.writing() as session:
        session.execute(
            update(ModelServer)
            .where(ModelServer.id == registration_id)
            .values(health_status=status)
        )


def wait_routable(gateway: ThreadedServer, model: str, count: int) -> None:
    wait_for(lambda: available(gateway, model) == count, timeout=5, what=f"{count} x {model}")


def health_of(gateway: ThreadedServer, registration_id: str) -> str:
    detail = httpx.get(f"{gateway.url}/admin/servers/{registration_id}", headers=HEADERS).json()
    status: str = detail["health_status"]
    return status


@pytest.fixture
def proxy(start_gateway: Callable[..., ThreadedServer]) -> ThreadedServer:
    # Slow start off: freshly registered backends would otherwise share unevenly.
    return start_gateway(
        rate_limit_per_minute=0, stream_idle_timeout_seconds=1, slow_start_seconds=0
    )


@pytest.fixture
def scripted() -> Iterator[Callable[..., tuple[ScriptedBackend, ThreadedServer]]]:
    running: list[ThreadedServer] = []

    def start(model: str = "m", behavior: str = "ok") -> tuple[ScriptedBackend, ThreadedServer]:
        backend = ScriptedBackend(model, behavior)
        server = ThreadedServer(backend.app).__enter__()
        running.append(server)
        return backend, server

    yield start
    for server in running:
        server.__exit__(None, None, None)


def sdk(gateway: ThreadedServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=kwargs.pop("api_key", "unused"),
        max_retries=0,
        **kwargs,
    )


def test_openai_sdk_plain_and_streaming(
    proxy: ThreadedServer, demo_backend: ThreadedServer
) -> None:
    """TC-INF-001 and TC-INF-005 with the unmodified SDK."""
    registration_id = register(proxy, "demo", demo_backend.url)
    wait_routable(proxy, "demo", 1)
    client = sdk(proxy)
    messages = [{"role": "user", "content": "tell me"}]
    raw = client.chat.completions.with_raw_response.create(model="demo", messages=messages)  # type: ignore[arg-type]
    assert raw.headers["x-gateway-server-id"] == registration_id
    assert raw.headers["x-request-id"]
    reply = raw.parse()
    assert (reply.choices[0].message.content or "").startswith("Hello from the demo backend!")

    chunks = list(client.chat.completions.create(model="demo", messages=messages, stream=True))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        reply.choices[0].message.content
    )
    completion = client.completions.create(model="demo", prompt="abc", max_tokens=9)
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="demo", prompt="abc", max_tokens=9, stream=True)
        if c.choices
    )
    assert streamed == completion.choices[0].text
    assert len(client.embeddings.create(model="demo", input="x").data[0].embedding) == 8
    models = client.models.list()
    assert [(m.id, m.model_extra["available_servers"]) for m in models] == [("demo", 1)]  # type: ignore[index]


def test_body_and_headers_are_forwarded_as_they_should(
    proxy: ThreadedServer, scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]]
) -> None:
    backend, server = scripted(behavior="echo")
    register_routable(proxy, server.url, api_key="backend-secret-123")
    body = (
        b'{"model":"m",  "messages":[{"role":"user","content":"h\\u00e9"}], "x_custom": [1,2.50]}'
    )
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": "Bearer client-own-key",
            "Cookie": "session=abc",
            "X-Request-ID": "trace-42",
        },
    )
    assert response.status_code == 200
    assert backend.last_body == body  # byte for byte
    assert response.content == body
    assert backend.last_headers["authorization"] == "Bearer backend-secret-123"
    assert "cookie" not in backend.last_headers
    assert backend.last_headers["x-request-id"] == "trace-42"
    assert response.headers["x-request-id"] == "trace-42"
    assert "backend-secret-123" not in response.text


def test_a_compressed_answer_keeps_its_encoding(
    proxy: ThreadedServer, scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]]
) -> None:
    """We ask for identity; a backend that gzips anyway is relayed byte for byte with its
    Content-Encoding, so the client can still read it."""
    _, server = scripted(behavior="gzip")
    register_routable(proxy, server.url)
    answer = sdk(proxy).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert answer.choices[0].message.content == "hi from m"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{nope", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"messages": []}', 400, "model"),
        (b'{"model": 7}', 400, "model"),
        (b'{"model": "m", "stream": "yes please"}', 400, "stream"),
        (b'{"model": "ghost", "messages": []}', 404, "available models: m"),
    ],
)
def test_client_errors(
    proxy: ThreadedServer,
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
    body: bytes,
    status: int,
    fragment: str,
) -> None:
    """TC-INF-002 and FR-ERROR-001: clear errors in the OpenAI shape, nothing forwarded."""
    backend, server = scripted()
    register_routable(proxy, server.url)
    response = httpx.post(f"{proxy.url}/v1/chat/completions", content=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"] and error["code"] == status
    assert server.url not in response.text
    assert backend.completions == 0


def test_an_unknown_models_404_leaves_out_a_model_whose_servers_all_drain(
    proxy: ThreadedServer,
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
) -> None:
    """The 404's list is of models a request could go to: a model whose only server is
    draining takes no new request, so it is not offered (found in a new user's trial)."""
    _, server = scripted()
    registration_id = register_routable(proxy, server.url)
    drained = httpx.post(f"{proxy.url}/admin/servers/{registration_id}/drain", headers=HEADERS)
    assert drained.status_code == 200, drained.text

    def message() -> str:
        answer = httpx.post(
            f"{proxy.url}/v1/chat/completions", json={"model": "ghost", "messages": []}
        )
        assert answer.status_code == 404
        text: str = answer.json()["error"]["message"]
        return text

    wait_for(lambda: "available models: none registered" in message(), timeout=10)


def test_unknown_model_via_sdk(proxy: ThreadedServer) -> None:
    with pytest.raises(openai.NotFoundError, match="none registered"):
        sdk(proxy).chat.completions.create(model="ghost", messages=[])


def test_body_limit(start_gateway: Callable[..., ThreadedServer]) -> None:
    gateway = start_gateway(rate_limit_per_minute=0, max_request_body_bytes=2048)
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", content=b'{"model": "m", "x": "' + b"a" * 4096 + b'"}'
    )
    assert response.status_code == 413 and "2048" in response.json()["error"]["message"]


def test_all_unhealthy_is_503(
    proxy: ThreadedServer,
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
    database: Database,
) -> None:
    """TC-INF-003: healthd (simulated by a write) marked the only backend unhealthy."""
    _, server = scripted()
    registration_id = register_routable(proxy, server.url)
    set_health(database, registration_id, "unhealthy")
    wait_routable(proxy, "m", 0)
    response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert "no healthy backend" in response.json()["error"]["message"]
    assert response.headers["retry-after"]


def test_a_registry_change_reaches_routing_quickly(
    proxy: ThreadedServer,
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
    database: Database,
) -> None:
    """Written straight to the database, as healthd would: routing follows within the poll
    interval (0.2 s). The deadline here is looser than the 0.5 s promise, for busy CI."""
    _, server = scripted()
    registration_id = register_routable(proxy, server.url)
    with database.writing() as session:
        session.execute(
            update(ModelServer).where(ModelServer.id == registration_id).values(is_active=False)
        )
    wait_for(lambda: available(proxy, "m") == -1, timeout=1.0, what="deregistration to route")


def test_round_robin_spreads_evenly(
    start_gateway: Callable[..., ThreadedServer],
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
) -> None:
    """TC-INF-007 (round robin: the default, `auto`, keeps one conversation together)."""
    proxy = start_gateway(
        rate_limit_per_minute=0, slow_start_seconds=0, routing_strategy="round_robin"
    )
    backends = [scripted() for _ in range(3)]
    for _, server in backends:
        register(proxy, "m", server.url)
    wait_routable(proxy, "m", 3)
    served = [
        httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT).headers["x-gateway-server-id"]
        for _ in range(30)
    ]
    assert sorted(served.count(s) for s in set(served)) == [10, 10, 10]
    assert [b.completions for b, _ in backends] == [10, 10, 10]


def test_tags_restrict_the_backends(
    proxy: ThreadedServer, scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]]
) -> None:
    _, plain = scripted()
    _, gpu = scripted()
    register(proxy, "m", plain.url)
    gpu_id = register(proxy, "m", gpu.url, tags=["gpu", "vision"])
    wait_routable(proxy, "m", 2)
    for _ in range(4):
        response = httpx.post(
            f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"X-Gateway-Tags": "GPU"}
        )
        assert response.headers["x-gateway-server-id"] == gpu_id
    none = httpx.post(
        f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"X-Gateway-Tags": "tpu"}
    )
    assert none.status_code == 503 and "tpu" in none.json()["error"]["message"]


def test_priority_tiers(
    proxy: ThreadedServer, scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]]
) -> None:
    _, first = scripted()
    _, second = scripted()
    first_id = register(proxy, "m", first.url, priority=0)
    register(proxy, "m", second.url, priority=1)
    wait_routable(proxy, "m", 2)
    served = {
        httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT).headers["x-gateway-server-id"]
        for _ in range(6)
    }
    assert served == {first_id}


async def test_a_hundred_concurrent_requests(
    proxy: ThreadedServer, scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]]
) -> None:
    for _ in range(2):
        _, server = scripted()
        register(proxy, "m", server.url)
    wait_routable(proxy, "m", 2)
    async with httpx.AsyncClient(timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post(f"{proxy.url}/v1/chat/completions", json=CHAT) for _ in range(100))
        )
    assert [r.status_code for r in responses] == [200] * 100


def test_request_timeout_is_504(
    start_gateway: Callable[..., ThreadedServer],
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
) -> None:
    """TC-INF-006."""
    gateway = start_gateway(rate_limit_per_minute=0, request_timeout_seconds=0.5)
    _, server = scripted(behavior="hang")
    register_routable(gateway, server.url)
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10)
    assert response.status_code == 504
    assert "timed out" in response.json()["error"]["message"]


def test_usage_is_counted_and_flushed(
    proxy: ThreadedServer,
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
    database: Database,
) -> None:
    _, server = scripted()
    registration_id = register_routable(proxy, server.url)
    httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
    with httpx.stream(
        "POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True}
    ) as response:
        response.read()

    def totals() -> tuple[int, int, int, int] | None:
        with database.reading() as session:
            row = session.scalar(
                select(BackendUsage).where(BackendUsage.server_id == registration_id)
            )
            if row is None or row.requests_total < 2:
                return None
            return (
                row.requests_total,
                row.failures_total,
                row.prompt_tokens_total,
                row.completion_tokens_total,
            )

    assert wait_for(totals, timeout=10, what="usage flush") == (2, 0, 3 + 5, 4 + 6)
    shown = httpx.get(f"{proxy.url}/admin/servers/{registration_id}", headers=HEADERS).json()
    assert shown["usage"]["requests"] == 2 and shown["usage"]["completion_tokens"] == 10
    assert shown["usage"]["mean_latency_ms"] is not None


def test_client_keys(
    start_gateway: Callable[..., ThreadedServer],
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
) -> None:
    gateway = start_gateway(
        rate_limit_per_minute=0, require_client_auth=True, client_api_keys="key-a,key-b"
    )
    backend, server = scripted()
    register(gateway, "m", server.url)
    wait_for(
        lambda: httpx.get(
            f"{gateway.url}/v1/models", headers={"Authorization": "Bearer key-a"}
        ).json()["data"],
        timeout=5,
    )
    missing = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT)
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        sdk(gateway, api_key="key-c").chat.completions.create(model="m", messages=[])
    reply = sdk(gateway, api_key="key-b").chat.completions.create(model="m", messages=[])
    assert reply.choices[0].message.content == "hi from m"
    assert backend.last_headers.get("authorization") is None  # the client's key stays here


def test_a_refused_key_is_told_in_the_shape_of_the_api_it_came_through(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    # The routes the gateway answers itself (an Ollama client's list, ps, version) raise
    # the refusal in a handler: it was OpenAI's shape, which Ollama's client shows raw.
    gateway = start_gateway(require_client_auth=True, client_api_keys="key-a")
    wrong = {"Authorization": "Bearer key-z"}
    for path in ("/api/tags", "/api/ps", "/api/version"):
        refused = httpx.get(f"{gateway.url}{path}", headers=wrong)
        assert (refused.status_code, refused.json()) == (401, {"error": "invalid API key"})
    with pytest.raises(ollama.ResponseError, match="invalid API key"):
        ollama.Client(host=gateway.url, headers=wrong, timeout=15).list()
    openai_refused = httpx.get(f"{gateway.url}/v1/models", headers=wrong)
    assert openai_refused.json()["error"]["type"] == "authentication_error"


def test_rate_limit(
    start_gateway: Callable[..., ThreadedServer],
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
) -> None:
    gateway = start_gateway(rate_limit_per_minute=3)
    _, server = scripted()
    register(gateway, "m", server.url)
    statuses = []
    for _ in range(4):
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "zzz"})
        statuses.append(response.status_code)
    assert statuses == [404, 404, 404, 429]
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_cors_preflight(proxy: ThreadedServer) -> None:
    response = httpx.options(
        f"{proxy.url}/v1/chat/completions",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("cors_origins", "origin", "allowed"),
    [
        ("*", "https://app.example", "*"),
        ("https://app.example", "https://app.example", "https://app.example"),
        ("https://app.example", "https://evil.example", None),
    ],
)
def test_cors_on_a_proxied_answer(
    start_gateway: Callable[..., ThreadedServer],
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
    cors_origins: str,
    origin: str,
    allowed: str | None,
) -> None:
    """The fast path answers with Starlette's CORS policy, like every other route."""
    gateway = start_gateway(rate_limit_per_minute=0, cors_origins=[cors_origins])
    _, server = scripted()
    register_routable(gateway, server.url)
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Origin": origin}
    )
    assert response.status_code == 200
    assert response.headers.get("access-control-allow-origin") == allowed
    exposed = response.headers.get("access-control-expose-headers", "")
    assert "X-Gateway-Server-ID" in exposed and "X-Request-ID" in exposed
    plain = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT)
    assert "access-control-allow-origin" not in plain.headers


def test_queue_waits_for_a_backend_to_recover(
    start_gateway: Callable[..., ThreadedServer],
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
    database: Database,
) -> None:
    """RECOVERY_WAIT_SECONDS: with no healthy backend the request waits; a recovery
    written while it waits (as healthd would) lets it through."""
    gateway = start_gateway(rate_limit_per_minute=0, recovery_wait_seconds=10)
    _, server = scripted()
    registration_id = register_routable(gateway, server.url)

    set_health(database, registration_id, "unhealthy")
    wait_routable(gateway, "m", 0)

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(timeout=20) as client:
            pending = asyncio.create_task(
                client.post(f"{gateway.url}/v1/chat/completions", json=CHAT)
            )
            await asyncio.sleep(0.5)
            assert not pending.done()  # still waiting for a healthy backend
            await asyncio.to_thread(set_health, database, registration_id, "healthy")
            return await pending

    response = asyncio.run(scenario())
    assert response.status_code == 200
    assert response.headers["x-gateway-server-id"] == registration_id


def test_a_registration_is_routable_when_its_201_returns(
    start_gateway: Callable[..., ThreadedServer],
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
) -> None:
    """No wait after registering: through the worker that registered it, and through
    another worker on the same registry (which looks again before answering 404)."""
    gateway = start_gateway(rate_limit_per_minute=0)
    other_worker = start_gateway(rate_limit_per_minute=0)
    for index in range(4):
        model = f"fresh-{index}"
        _, server = scripted(model)
        register(gateway, model, server.url)
        for worker in (gateway, other_worker):
            body = {**CHAT, "model": model}
            response = httpx.post(f"{worker.url}/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text


def test_trace_context_reaches_the_backend_and_the_request_line(
    start_gateway: Callable[..., ThreadedServer],
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
    tmp_path: Path,
) -> None:
    gateway = start_gateway(rate_limit_per_minute=0)
    backend, server = scripted()
    register_routable(gateway, server.url)
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace}-00f067aa0ba902b7-01"
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CHAT,
        headers={"traceparent": parent, "tracestate": "congo=t61rcWkgMzE"},
    )
    assert response.status_code == 200
    assert backend.last_headers["traceparent"] == parent
    assert backend.last_headers["tracestate"] == "congo=t61rcWkgMzE"

    def served_line() -> dict[str, Any] | None:
        for line in (tmp_path / "logs" / "gateway.log").read_text().splitlines():
            entry: dict[str, Any] = json.loads(line)
            if entry.get("message") == "request served":
                return entry
        return None

    entry = wait_for(served_line, timeout=5, what="the request line")
    assert entry["trace_id"] == trace


def test_the_gateways_own_error_answers_have_a_line_too(
    start_gateway: Callable[..., ThreadedServer],
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
    tmp_path: Path,
) -> None:
    """A request no backend answered (a model not found, every backend failing, a
    rate limit) is in the log as `request refused` (4xx) or `request failed` (5xx),
    with its status, model and request id."""
    gateway = start_gateway(rate_limit_per_minute=0)
    _, server = scripted(behavior="error500")
    register_routable(gateway, server.url)
    missing = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={**CHAT, "model": "nowhere"},
        headers={"x-request-id": "req-missing"},
    )
    assert missing.status_code == 404
    failing = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"x-request-id": "req-failing"}
    )
    assert failing.status_code >= 500

    def lines() -> dict[str, dict[str, Any]] | None:
        found = {}
        for line in (tmp_path / "logs" / "gateway.log").read_text().splitlines():
            entry: dict[str, Any] = json.loads(line)
            if entry.get("message") in ("request refused", "request failed"):
                found[entry["request_id"]] = entry
        return found if len(found) == 2 else None

    found = wait_for(lines, timeout=5, what="the lines of the error answers")
    assert found["req-missing"]["message"] == "request refused"
    assert found["req-missing"]["status"] == 404 and found["req-missing"]["model"] == "nowhere"
    assert found["req-failing"]["message"] == "request failed"
    assert found["req-failing"]["status"] == failing.status_code


def test_models_lists_what_a_client_can_use(
    start_gateway: Callable[..., ThreadedServer],
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
    database: Database,
) -> None:
    """A model is listed while a healthy backend serves it; ?all=true lists every one."""
    gateway = start_gateway(rate_limit_per_minute=0)
    _, up = scripted("up")
    _, down = scripted("down")
    register(gateway, "up", up.url)
    down_id = register(gateway, "down", down.url)
    set_health(database, down_id, "unhealthy")
    wait_for(lambda: available(gateway, "down") == 0, timeout=5, what="the down model")
    listed = httpx.get(f"{gateway.url}/v1/models").json()["data"]
    assert [entry["id"] for entry in listed] == ["up"]
    every = httpx.get(f"{gateway.url}/v1/models", params={"all": "true"}).json()["data"]
    assert [(e["id"], e["available_servers"]) for e in every] == [("down", 0), ("up", 1)]
    assert httpx.get(f"{gateway.url}/v1/models", params={"all": "maybe"}).status_code == 400


@pytest.mark.parametrize("model", ["/models/llama-tiny", "llama3.1:8b-instruct-q4_K_M", "My Model"])
def test_a_model_is_named_as_its_server_names_it(
    start_gateway: Callable[..., ThreadedServer],
    scripted: Callable[..., tuple[ScriptedBackend, ThreadedServer]],
    model: str,
) -> None:
    """`vllm serve /models/llama-tiny` names its model by the path: registered as it is."""
    gateway = start_gateway(rate_limit_per_minute=0)
    _, server = scripted(model)
    register(gateway, model, server.url)
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": model})
    assert response.status_code == 200, response.text
    listed = httpx.get(f"{gateway.url}/v1/models").json()["data"]
    assert [entry["id"] for entry in listed] == [model]
