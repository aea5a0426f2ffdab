"""The admin API over real HTTP (TC-REG-001..006 and the rules around them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli.demo_backend import create_demo_app
from tests.conftest import ADMIN_KEY
from tests.fakes import CountingApp, models_answering
from tests.support import ThreadedServer, free_port

HEADERS = {"X-API-Key": ADMIN_KEY}


def register(gateway: ThreadedServer, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", HEADERS)
    return httpx.post(f"{gateway.url}/admin/register", json=body, headers=headers, timeout=15)


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    return error


def test_register_a_healthy_backend(gateway: ThreadedServer, demo_backend: ThreadedServer) -> None:
    """TC-REG-001."""
    response = register(
        gateway,
        {
            "model_name": "demo",
            "endpoint_url": demo_backend.url + "/v1/",
            "capabilities": {"max_tokens": 4096, "context_length": 8192, "streaming": True},
            "metadata": {"student_id": "alice", "description": "laptop"},
            "tags": ["GPU", "vision"],
            "priority": 1,
            "weight": 3,
            "max_concurrent": 4,
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "registered"
    assert body["health_status"] == "healthy"
    assert body["reported_models"] == ["demo"]

    detail = httpx.get(
        f"{gateway.url}/admin/servers/{body['registration_id']}", headers=HEADERS
    ).json()
    assert detail["endpoint_url"] == demo_backend.url  # trailing /v1/ removed
    assert detail["tags"] == ["gpu", "vision"]
    assert (detail["priority"], detail["weight"], detail["max_concurrent"]) == (1, 3, 4)
    assert detail["metadata"] == {"student_id": "alice", "description": "laptop"}
    assert detail["capabilities"]["context_length"] == 8192
    assert [c["status"] for c in detail["recent_checks"]] == ["success"]
    assert detail["success_rate"] == 100.0 and detail["uptime_percent"] == 100.0
    assert detail["last_checked_at"] is not None and detail["status_changed_at"] is not None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model_name": "demo", "endpoint_url": "ftp://example.com"}, "endpoint_url"),
        ({"model_name": "demo", "endpoint_url": "not a url"}, "endpoint_url"),
        ({"model_name": "demo", "endpoint_url": "http://user:pw@example.com"}, "endpoint_url"),
        ({"model_name": "demo", "endpoint_url": "http://"}, "endpoint_url"),
        ({"model_name": "x" * 257, "endpoint_url": "http://127.0.0.1:1"}, "model_name"),
        ({"model_name": "line\nbreak", "endpoint_url": "http://127.0.0.1:1"}, "model_name"),
        ({"backend_model": "x", "endpoint_url": "http://127.0.0.1:1"}, "backend_model"),
        ({"model_name": "demo"}, "endpoint_url"),
        (
            {
                "model_name": "demo",
                "endpoint_url": "http://127.0.0.1:1",
                "capabilities": {"max_tokens": 0},
            },
            "capabilities.max_tokens",
        ),
        ({"model_name": "demo", "endpoint_url": "http://127.0.0.1:1", "weight": -1}, "weight"),
        ({"model_name": "demo", "endpoint_url": "http://127.0.0.1:1", "colour": "red"}, "colour"),
    ],
)
def test_invalid_registrations_are_rejected(
    gateway: ThreadedServer, body: dict[str, Any], param: str
) -> None:
    """TC-REG-002: a clear 400 naming the field, before any probe."""
    error = assert_openai_error(register(gateway, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"", "empty"),
    ],
)
def test_malformed_bodies_get_400(gateway: ThreadedServer, raw: bytes, fragment: str) -> None:
    response = httpx.post(f"{gateway.url}/admin/register", content=raw, headers=HEADERS)
    assert fragment in assert_openai_error(response, 400)["message"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-API-Key": "wrong-key"}, 403), ({"X-API-Key": ADMIN_KEY + "x"}, 403)],
)
def test_admin_key_is_required(
    gateway: ThreadedServer, demo_backend: ThreadedServer, headers: dict[str, str], status: int
) -> None:
    """TC-REG-003, for every admin route."""
    body = {"model_name": "demo", "endpoint_url": demo_backend.url}
    assert_openai_error(register(gateway, body, headers=headers), status)
    for method, path in [
        ("GET", "/admin/servers"),
        ("GET", "/admin/servers/x"),
        ("PUT", "/admin/register/x"),
        ("DELETE", "/admin/register/x"),
    ]:
        assert_openai_error(httpx.request(method, gateway.url + path, headers=headers), status)


def test_empty_admin_key_disables_the_admin_api(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    gateway = start_gateway(admin_api_key="")
    response = httpx.get(f"{gateway.url}/admin/servers", headers={"X-API-Key": ""})
    assert "ADMIN_API_KEY" in assert_openai_error(response, 503)["message"]


def test_deregister(gateway: ThreadedServer, demo_backend: ThreadedServer) -> None:
    """TC-REG-004, and the same backend can register again afterwards."""
    body = {"model_name": "demo", "endpoint_url": demo_backend.url}
    registration_id = register(gateway, body).json()["registration_id"]
    response = httpx.delete(f"{gateway.url}/admin/register/{registration_id}", headers=HEADERS)
    assert response.status_code == 200
    assert response.json() == {"registration_id": registration_id, "status": "deregistered"}
    listed = httpx.get(f"{gateway.url}/admin/servers", headers=HEADERS).json()
    assert listed == []
    everything = httpx.get(
        f"{gateway.url}/admin/servers", params={"include_inactive": "true"}, headers=HEADERS
    ).json()
    assert [(s["registration_id"], s["is_active"]) for s in everything] == [
        (registration_id, False)
    ]
    assert register(gateway, body).status_code == 201


def test_deregister_unknown_is_404(gateway: ThreadedServer) -> None:
    """TC-REG-005."""
    response = httpx.delete(f"{gateway.url}/admin/register/no-such-id", headers=HEADERS)
    assert assert_openai_error(response, 404)["type"] == "not_found_error"
    assert_openai_error(httpx.get(f"{gateway.url}/admin/servers/no-such-id", headers=HEADERS), 404)


def test_update(gateway: ThreadedServer, demo_backend: ThreadedServer) -> None:
    """TC-REG-006: partial update; a new URL is probed before it is saved."""
    registration_id = register(
        gateway,
        {"model_name": "demo", "endpoint_url": demo_backend.url, "metadata": {"student_id": "a"}},
    ).json()["registration_id"]
    url = f"{gateway.url}/admin/register/{registration_id}"

    response = httpx.put(
        url, json={"metadata": {"description": "moved"}, "priority": 5}, headers=HEADERS
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["metadata"] == {"student_id": "a", "description": "moved"}
    assert updated["priority"] == 5

    dead = f"http://127.0.0.1:{free_port()}"
    response = httpx.put(url, json={"endpoint_url": dead}, headers=HEADERS, timeout=15)
    assert "health check" in assert_openai_error(response, 503)["message"]
    after = httpx.get(f"{gateway.url}/admin/servers/{registration_id}", headers=HEADERS).json()
    assert after["endpoint_url"] == demo_backend.url  # nothing was written

    assert_openai_error(httpx.put(url, json={}, headers=HEADERS), 400)
    missing = httpx.put(f"{gateway.url}/admin/register/nope", json={"weight": 2}, headers=HEADERS)
    assert_openai_error(missing, 404)


def test_duplicate_registration_is_a_conflict(
    gateway: ThreadedServer, demo_backend: ThreadedServer
) -> None:
    body = {"model_name": "demo", "endpoint_url": demo_backend.url}
    first = register(gateway, body).json()["registration_id"]
    error = assert_openai_error(register(gateway, body), 409)
    assert first in error["message"]


@pytest.mark.parametrize(
    ("app", "reason"),
    [
        (models_answering(500, '{"error": "boom"}'), "HTTP 500"),
        (models_answering(200, "<html>hello</html>"), "not valid JSON"),
        (models_answering(200, '{"models": []}'), "not a model list"),
        (models_answering(200, '{"data": []}', delay=5), "within 1s"),
        (create_demo_app("demo", api_key="right-key-123"), "HTTP 401"),
    ],
)
def test_a_failing_probe_refuses_the_registration(
    start_gateway: Callable[..., ThreadedServer], app: Any, reason: str
) -> None:
    gateway = start_gateway(health_check_timeout_seconds=1)
    with ThreadedServer(app) as backend:
        response = register(gateway, {"model_name": "demo", "endpoint_url": backend.url})
    error = assert_openai_error(response, 503)
    assert reason in error["message"]
    assert backend.url not in error["message"]
    assert httpx.get(f"{gateway.url}/admin/servers", headers=HEADERS).json() == []


def test_refused_connection_is_503(gateway: ThreadedServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    error = assert_openai_error(register(gateway, {"model_name": "m", "endpoint_url": dead}), 503)
    assert "refused" in error["message"] or "could not connect" in error["message"]


def test_backend_key_is_used_but_never_shown(gateway: ThreadedServer, tmp_path: Path) -> None:
    secret = "sk-backend-secret-value-42"
    with ThreadedServer(create_demo_app("demo", api_key=secret)) as backend:
        response = register(
            gateway, {"model_name": "demo", "endpoint_url": backend.url, "api_key": secret}
        )
        assert response.status_code == 201, response.text
        registration_id = response.json()["registration_id"]
        detail = httpx.get(f"{gateway.url}/admin/servers/{registration_id}", headers=HEADERS)
        listing = httpx.get(f"{gateway.url}/admin/servers", headers=HEADERS)
        # Changing the key re-probes with the new one: a wrong key is refused.
        wrong = httpx.put(
            f"{gateway.url}/admin/register/{registration_id}",
            json={"api_key": "sk-wrong-key-000000"},
            headers=HEADERS,
            timeout=15,
        )
    assert detail.json()["api_key_set"] is True
    for response in (detail, listing, wrong):
        assert secret not in response.text
    assert "HTTP 401" in assert_openai_error(wrong, 503)["message"]
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "server registered" in logs
    assert secret not in logs


def test_body_over_one_mebibyte_is_413(gateway: ThreadedServer) -> None:
    body = json.dumps(
        {
            "model_name": "demo",
            "endpoint_url": "http://x",
            "metadata": {"description": "x" * (1024 * 1024)},
        }
    ).encode()
    response = httpx.post(f"{gateway.url}/admin/register", content=body, headers=HEADERS)
    assert assert_openai_error(response, 413)["type"] == "invalid_request_error"


def test_list_filters(gateway: ThreadedServer) -> None:
    with ThreadedServer(create_demo_app("a")) as one, ThreadedServer(create_demo_app("b")) as two:
        register(
            gateway, {"model_name": "a", "endpoint_url": one.url, "metadata": {"student_id": "x"}}
        )
        register(
            gateway, {"model_name": "b", "endpoint_url": two.url, "metadata": {"student_id": "y"}}
        )

    def names(**params: str) -> list[str]:
        response = httpx.get(f"{gateway.url}/admin/servers", params=params, headers=HEADERS)
        assert response.status_code == 200, response.text
        return sorted(s["model_name"] for s in response.json())

    assert names() == ["a", "b"]
    assert names(model="a") == ["a"]
    assert names(student_id="y") == ["b"]
    assert names(status="healthy") == ["a", "b"]
    assert names(status="unknown") == []
    bad = httpx.get(f"{gateway.url}/admin/servers", params={"status": "sick"}, headers=HEADERS)
    assert_openai_error(bad, 400)


def test_unknown_routes_and_methods_use_the_openai_error_format(gateway: ThreadedServer) -> None:
    assert_openai_error(httpx.get(f"{gateway.url}/no/such/page"), 404)
    assert_openai_error(httpx.post(f"{gateway.url}/health"), 405)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/api/pull", 404),
        ("DELETE", "/api/delete", 404),
        ("GET", "/api/chat", 405),
        ("GET", "/api/tags/x", 404),
        ("GET", "/v1/messages", 405),
        ("POST", "/v1/messages/batches", 404),
        ("GET", "/v1/messages/count_tokens", 405),
    ],
)
def test_unknown_routes_and_methods_of_other_apis_answer_in_their_shape(
    gateway: ThreadedServer, method: str, path: str, status: int
) -> None:
    """An Ollama client's `ollama pull` or an Anthropic SDK's batches get an error their
    client reads (from a new user's trial: they were OpenAI's shape)."""
    response = httpx.request(method, f"{gateway.url}{path}", json={})
    assert response.status_code == status, response.text
    document = response.json()
    if path.startswith("/api/"):
        assert set(document) == {"error"} and path in document["error"]
    else:
        assert document["type"] == "error" and path in document["error"]["message"]
        assert document["error"]["type"] == "not_found_error" if status == 404 else True
    if status == 405:
        assert response.headers["allow"]


def test_health_reports_the_database(gateway: ThreadedServer) -> None:
    response = httpx.get(f"{gateway.url}/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["database"] == "ok"


def test_request_id_is_echoed_or_made(gateway: ThreadedServer) -> None:
    sent = httpx.get(f"{gateway.url}/health", headers={"X-Request-ID": "trace-123"})
    assert sent.headers["x-request-id"] == "trace-123"
    made = httpx.get(f"{gateway.url}/health", headers={"X-Request-ID": "bad id\twith tab"})
    assert made.headers["x-request-id"] != "bad id\twith tab"
    assert len(made.headers["x-request-id"]) == 32


def test_a_counting_backend_sees_the_probe(gateway: ThreadedServer) -> None:
    """Registration really contacts the backend once (GET /v1/models)."""
    app = CountingApp(create_demo_app("demo"))
    with ThreadedServer(app) as backend:
        assert (
            register(gateway, {"model_name": "demo", "endpoint_url": backend.url}).status_code
            == 201
        )
    assert app.requests == 1


def test_streamed_body_over_the_limit_is_413(gateway: ThreadedServer) -> None:
    """No Content-Length (chunked upload): the limit still holds while reading."""

    def chunks() -> Any:
        for _ in range(80):
            yield b"x" * 16384

    response = httpx.post(f"{gateway.url}/admin/register", content=chunks(), headers=HEADERS)
    assert_openai_error(response, 413)


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}",
        "http://localhost:{port}",
        "http://127.1:{port}",
        "http://2130706433:{port}",
        "http://0x7f000001:{port}",
        "http://0177.0.0.1:{port}",
        "http://[::ffff:127.0.0.1]:{port}",
        "http://[::1]:{port}",
    ],
)
def test_loopback_spellings_are_refused_without_contacting_the_backend(
    start_gateway: Callable[..., ThreadedServer], template: str
) -> None:
    """The SSRF guard over HTTP. Only loopback spellings are used, so even a broken
    guard could not send traffic off this machine; the counting backend proves
    the guard refused before any probe."""
    gateway = start_gateway(allow_private_backends=False)
    app = CountingApp(create_demo_app("demo"))
    with ThreadedServer(app) as backend:
        url = template.format(port=backend.port)
        response = register(gateway, {"model_name": "demo", "endpoint_url": url})
    error = assert_openai_error(response, 400)
    assert "loopback" in error["message"] and error["param"] == "endpoint_url"
    assert "ALLOW_PRIVATE_BACKENDS" in error["message"]
    assert app.requests == 0


def test_a_nul_in_a_query_is_a_400_on_every_engine(gateway: ThreadedServer) -> None:
    """PostgreSQL refuses a NUL in text (a 500 there, found by the schema fuzz)."""
    for path in (
        "/admin/servers?student_id=a%00b",
        "/admin/keys?owner=%00",
        "/admin/stats?owner=x%00",
    ):
        answer = httpx.get(f"{gateway.url}{path}", headers=HEADERS)
        assert answer.status_code == 400, (path, answer.text)
        assert "NUL" in answer.json()["error"]["message"]
