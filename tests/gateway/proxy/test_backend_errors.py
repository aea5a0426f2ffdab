"""A backend's error answer: what it says of the backend (a path it lacks, an option it
refuses, or only this request), and what the client gets (its API's shape, no secret)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.proxy.backend_errors import (
    client_error_body,
    lacks_endpoint,
    redacted,
    refuses_usage_option,
)
from tests.gateway.proxy.test_proxy import CHAT, register, wait_routable
from tests.raw_backend import RawBackend, Seen, Step, Write, completion, http
from tests.support import ADMIN_KEY, GatewayProcess, ThreadedServer, process_settings, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}
# What servers really answer (vLLM/SGLang are FastAPI, Ollama is Go, llama.cpp its own).
FASTAPI_404 = b'{"detail":"Not Found"}'
GO_404 = b"404 page not found"
LLAMA_CPP_404 = b'{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}'
VLLM_NO_MODEL = (
    b'{"error":{"message":"The model `m` does not exist.","type":"NotFoundError",'
    b'"param":"model","code":404}}'
)
VLLM_NO_RESPONSE = b'{"error":{"message":"Response with id \'resp_1\' not found.","code":404}}'
OLLAMA_NO_MODEL = b'{"error":"model \\"m\\" not found, try pulling it first"}'


@pytest.mark.parametrize(
    ("status", "body", "lacks"),
    [
        (404, FASTAPI_404, True),
        (404, GO_404, True),
        (404, LLAMA_CPP_404, True),
        (404, b"", True),
        (404, b"<html><body>Not Found</body></html>", True),
        (404, b'{"error":{"message":"no route /v1/rerank"}}', True),  # names the path
        (405, b'{"detail":"Method Not Allowed"}', True),
        (501, b"", True),
        (404, VLLM_NO_MODEL, False),
        (404, VLLM_NO_RESPONSE, False),
        (404, OLLAMA_NO_MODEL, False),
        (400, FASTAPI_404, False),
        (500, b"", False),
    ],
)
def test_a_path_is_lacking_only_when_the_body_says_so(
    status: int, body: bytes, lacks: bool
) -> None:
    assert lacks_endpoint(status, body, "/v1/rerank") is lacks


@pytest.mark.parametrize(
    ("status", "body", "refuses"),
    [
        (400, b'{"error":{"message":"Unrecognized request argument supplied: stream_options"}}', 1),
        (422, b'{"detail":[{"loc":["body","stream_options"],"msg":"extra fields"}]}', 1),
        (400, b'{"error":{"message":"include_usage is not supported"}}', 1),
        (400, b'{"error":{"message":"This model\'s maximum context length is 8 tokens"}}', 0),
        (422, b'{"detail":[{"loc":["body","messages"],"msg":"field required"}]}', 0),
        (500, b"stream_options", 0),
        # A validator echoing the whole input names the option without refusing it.
        (
            400,
            b'{"error":{"message":"1 validation error: Value error, top_logprobs needs '
            b"logprobs [type=value_error, input_value={'model': 'm', 'stream_options': "
            b"{'include_usage': True}}, input_type=dict]\"}}",
            0,
        ),
    ],
)
def test_only_an_answer_naming_the_option_refuses_it(
    status: int, body: bytes, refuses: int
) -> None:
    assert refuses_usage_option(status, body) is bool(refuses)


@pytest.mark.parametrize(
    ("status", "body", "path", "message"),
    [
        (404, GO_404, "/v1/rerank", "the backend does not offer /v1/rerank (HTTP 404)"),
        (404, LLAMA_CPP_404, "/v1/rerank", "the backend does not offer /v1/rerank (HTTP 404)"),
        (422, b'{"detail":[{"loc":["body","n"],"msg":"bad"}]}', "/v1/x", "HTTP 422: n: bad"),
        (400, b'{"detail":"prompt too long"}', "/v1/x", "HTTP 400: prompt too long"),
        (500, b"<h1>oops</h1>", "/v1/x", "HTTP 500 with no error details"),
        (401, b'{"message":"no key"}', "/v1/x", "HTTP 401: no key"),
    ],
)
def test_what_is_not_in_the_openai_shape_is_wrapped(
    status: int, body: bytes, path: str, message: str
) -> None:
    wrapped = client_error_body(status, body, path)
    assert wrapped is not None
    error = json.loads(wrapped)["error"]
    assert message in error["message"] and error["code"] == status


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (VLLM_NO_MODEL, "/v1/chat/completions"),
        (
            b'{"type":"error","error":{"type":"invalid_request_error","message":"x"}}',
            "/v1/messages",
        ),
        (OLLAMA_NO_MODEL, "/api/chat"),
    ],
)
def test_an_error_in_its_apis_shape_is_passed_on(body: bytes, path: str) -> None:
    assert client_error_body(404 if b"not" in body else 400, body, path) is None


OPENAI_400 = b'{"error":{"message":"body is not JSON","type":"invalid_request_error"}}'


@pytest.mark.parametrize(
    ("status", "body", "path", "expected"),
    [
        (
            400,
            OPENAI_400,
            "/v1/messages",
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "the backend answered HTTP 400: body is not JSON",
                },
            },
        ),
        (
            503,
            b"<h1>busy</h1>",
            "/v1/messages/count_tokens",
            {
                "type": "error",
                "error": {
                    "type": "overloaded_error",
                    "message": "the backend answered HTTP 503 with no error details",
                },
            },
        ),
        (
            400,
            OPENAI_400,
            "/api/chat",
            {"error": "the backend answered HTTP 400: body is not JSON"},
        ),
        (
            404,
            GO_404,
            "/api/generate",
            {"error": "the backend does not offer /api/generate (HTTP 404)"},
        ),
    ],
)
def test_an_error_in_another_shape_is_wrapped_in_the_shape_of_the_clients_api(
    status: int, body: bytes, path: str, expected: dict[str, object]
) -> None:
    # Anthropic's SDK and Ollama's client read their own shape: a native server that
    # answers /v1/messages or /api/ errors in OpenAI's shape is reshaped.
    wrapped = client_error_body(status, body, path)
    assert wrapped is not None and json.loads(wrapped) == expected


def test_ollamas_shape_is_wrapped_outside_its_own_routes() -> None:
    assert client_error_body(404, OLLAMA_NO_MODEL, "/v1/chat/completions") is not None


def test_secrets_are_redacted_in_every_form() -> None:
    body = b'{"detail":"Bearer sk-a/b and sk-a\\/b"}'
    assert redacted(body, ("sk-a/b",)) == b'{"detail":"Bearer [REDACTED] and [REDACTED]"}'
    assert redacted(b"nothing", ("",)) == b"nothing"


# -- through a real gateway process ----------------------------------------------------


def gateway_process(tmp_path: Path, database_url: str) -> GatewayProcess:
    settings = process_settings(
        tmp_path, database_url, RATE_LIMIT_PER_MINUTE="0", SLOW_START_SECONDS="0"
    )
    return GatewayProcess(tmp_path, settings)


def register_at(url: str, **body: object) -> str:
    answer = httpx.post(f"{url}/admin/register", json=body, headers=HEADERS, timeout=15)
    assert answer.status_code == 201, answer.text
    registration_id: str = answer.json()["registration_id"]
    return registration_id


def routable(url: str, model: str) -> bool:
    listed = httpx.get(f"{url}/v1/models", timeout=5).json()["data"]
    return any(entry["id"] == model for entry in listed)


def test_a_request_that_fails_before_it_is_sent_keeps_no_slot(
    tmp_path: Path, database_url: str
) -> None:
    """A body the rename cannot prepare (or a lone surrogate) takes no slot: with
    max_concurrent=2, two such requests must not leave the backend 'at its limit'."""
    with RawBackend(model="real") as backend, gateway_process(tmp_path, database_url) as gateway:
        register_at(
            gateway.url,
            model_name="chat",
            backend_model="real",
            endpoint_url=backend.url,
            max_concurrent=2,
        )
        wait_for(lambda: routable(gateway.url, "chat"), what="the model to be routable")
        odd = [
            b' {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}',
            b'{"model": "chat", "messages": "\\ud800"}',
        ]
        for body in odd * 2:
            answer = httpx.post(
                f"{gateway.url}/v1/chat/completions",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=15,
            )
            assert answer.status_code < 500, answer.text
            assert "error" not in answer.json() or answer.json()["error"]["code"] == 400
        for _ in range(3):
            answer = httpx.post(
                f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": "chat"}, timeout=15
            )
            assert answer.status_code == 200, answer.text


def test_faults_of_one_model_leave_the_server_to_its_other_models(
    tmp_path: Path, database_url: str
) -> None:
    """One server serves A and B; A fails on it (another server has A). Ejected for A,
    it stays B's only server: B keeps working ('never the last one')."""

    def a_breaks(seen: Seen) -> list[Step]:
        if seen.json.get("model") == "A":
            return [Write(http(500, b'{"error":{"message":"boom"}}'))]
        return [Write(http(200, completion(model="B")))]

    with (
        RawBackend(a_breaks, models=("A", "B")) as both,
        RawBackend(model="A") as other,
        gateway_process(tmp_path, database_url) as gateway,
    ):
        register_at(gateway.url, endpoint_url=both.url, priority=0)
        register_at(gateway.url, model_name="A", endpoint_url=other.url, priority=1)
        wait_for(lambda: routable(gateway.url, "B"), what="model B to be routable")
        chat = f"{gateway.url}/v1/chat/completions"
        for _ in range(4):  # each fails over to the other server of A
            assert httpx.post(chat, json={**CHAT, "model": "A"}, timeout=15).status_code == 200
        assert both.posts == 3  # ejected for A after three faults: the fourth went elsewhere
        for _ in range(3):
            answer = httpx.post(chat, json={**CHAT, "model": "B"}, timeout=15)
            assert answer.status_code == 200, answer.text
        assert both.posts == 6


def test_backend_errors_reach_the_client_in_shape_and_without_the_backends_key(
    tmp_path: Path, database_url: str
) -> None:
    key = "sk-backend-secret-0123456789"

    def echoes(seen: Seen) -> list[Step]:
        said = seen.headers.get("authorization", "")
        if seen.json.get("stream"):
            document = {"error": {"message": f"invalid token: {said}", "code": 401}}
            return [Write(http(401, json.dumps(document).encode()))]
        if seen.json.get("n") == 2:
            return [Write(http(404, b"Not Found", content_type="text/plain"))]
        return [Write(http(401, json.dumps({"detail": f"bad {said}"}).encode()))]

    with RawBackend(echoes) as backend, gateway_process(tmp_path, database_url) as gateway:
        register_at(gateway.url, model_name="m", endpoint_url=backend.url, api_key=key)
        wait_for(lambda: routable(gateway.url, "m"), what="the model to be routable")
        chat = f"{gateway.url}/v1/chat/completions"
        for extra in ({}, {"stream": True}):
            answer = httpx.post(chat, json={**CHAT, **extra}, timeout=15)
            assert answer.status_code == 401
            assert key not in answer.text and "[REDACTED]" in answer.text, answer.text
            assert answer.json()["error"]["code"] == 401
        lacking = httpx.post(chat, json={**CHAT, "n": 2}, timeout=15)
        assert lacking.status_code == 404
        assert lacking.json()["error"]["message"] == (
            "the backend does not offer /v1/chat/completions (HTTP 404)"
        )


# -- statuses are not capabilities (a gateway in this process: counts are read back) ------


def test_a_404_about_the_model_is_passed_on_and_not_remembered(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    gateway = start_gateway(rate_limit_per_minute=0, slow_start_seconds=0)
    with (
        RawBackend(lambda seen: [Write(http(404, VLLM_NO_MODEL))]) as first,
        RawBackend() as second,
    ):
        register(gateway, "m", first.url, priority=0)
        register(gateway, "m", second.url, priority=1)
        wait_routable(gateway, "m", 2)
        for _ in range(2):
            answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=15)
            assert answer.status_code == 404
            assert answer.json()["error"]["message"] == "The model `m` does not exist."
        assert (first.posts, second.posts) == (2, 0)


def test_a_400_on_a_stream_that_does_not_name_the_option_is_sent_once(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    too_long = b'{"error":{"message":"This model\'s maximum context length is 8 tokens"}}'
    gateway = start_gateway(rate_limit_per_minute=0, slow_start_seconds=0)
    with RawBackend(lambda seen: [Write(http(400, too_long))]) as backend:
        register(gateway, "m", backend.url)
        wait_routable(gateway, "m", 1)
        for sent in (1, 2):
            answer = httpx.post(
                f"{gateway.url}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=15
            )
            assert answer.status_code == 400 and answer.content == too_long
            assert backend.posts == sent
            assert b"stream_options" in backend.requests[-1].body  # still asked: not refused


def test_a_501_is_passed_on_not_counted_as_a_fault(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    gateway = start_gateway(rate_limit_per_minute=0, slow_start_seconds=0)
    with RawBackend(lambda seen: [Write(http(501, b'{"detail":"Not Implemented"}'))]) as backend:
        register(gateway, "m", backend.url)
        wait_routable(gateway, "m", 1)
        answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=15)
        assert answer.status_code == 501
        assert "does not offer /v1/chat/completions" in answer.json()["error"]["message"]


def test_a_204_has_no_content_length(start_gateway: Callable[..., ThreadedServer]) -> None:
    gateway = start_gateway(rate_limit_per_minute=0)
    with RawBackend(lambda seen: [Write(b"HTTP/1.1 204 No Content\r\n\r\n")]) as backend:
        register(gateway, "m", backend.url)
        wait_routable(gateway, "m", 1)
        answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=15)
        assert answer.status_code == 204 and "content-length" not in answer.headers


def test_a_model_whose_servers_left_is_offline_not_unknown(
    tmp_path: Path, database_url: str
) -> None:
    with RawBackend() as backend, gateway_process(tmp_path, database_url) as gateway:
        registration_id = register_at(gateway.url, model_name="m", endpoint_url=backend.url)
        wait_for(lambda: routable(gateway.url, "m"), what="the model to be routable")
        gone = httpx.delete(
            f"{gateway.url}/admin/register/{registration_id}", headers=HEADERS, timeout=15
        )
        assert gone.status_code == 200, gone.text
        chat = f"{gateway.url}/v1/chat/completions"

        def offline() -> bool:
            return httpx.post(chat, json=CHAT, timeout=15).status_code == 503

        wait_for(offline, what="every worker to see the server gone")
        answer = httpx.post(chat, json=CHAT, timeout=15)
        message = answer.json()["error"]["message"]
        assert message.startswith("model 'm' is offline: its last server left at 20")
        assert int(answer.headers["retry-after"]) > 0
        never = httpx.post(chat, json={**CHAT, "model": "never-served"}, timeout=15)
        assert never.status_code == 404
        asked = httpx.get(f"{gateway.url}/v1/models/m", timeout=15)  # and so says the list
        assert asked.status_code == 503 and "offline" in asked.json()["error"]["message"]


def test_a_compressed_error_that_is_wrapped_loses_its_encoding(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    """The gateway's own body replaces the backend's: the backend's Content-Encoding must
    not describe it (the client could not read the error at all)."""
    squeezed = gzip.compress(b'{"detail":"bad key"}')
    answer_bytes = http(401, squeezed, "Content-Encoding: gzip")
    gateway = start_gateway(rate_limit_per_minute=0)
    with RawBackend(lambda seen: [Write(answer_bytes)]) as backend:
        register(gateway, "m", backend.url)
        wait_routable(gateway, "m", 1)
        answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=15)
        assert answer.status_code == 401 and "content-encoding" not in answer.headers
        assert answer.json()["error"]["code"] == 401


def test_a_400_that_only_echoes_the_option_is_not_learnt_as_a_refusal(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    echo = (
        b'{"error":{"message":"Value error [type=value_error, input_value={\'stream_options\': '
        b"{'include_usage': True}}]\"}}"
    )
    refusal = b'{"error":{"message":"Unrecognized request argument supplied: stream_options"}}'
    answers = iter([refusal, b'{"error":{"message":"logprobs must be set"}}'])

    def script(seen: Seen) -> list[Step]:
        if b"stream_options" in seen.body:
            return [Write(http(400, next(answers, echo)))]
        return [Write(http(400, b'{"error":{"message":"logprobs must be set"}}'))]

    gateway = start_gateway(rate_limit_per_minute=0)
    with RawBackend(script) as backend:
        register(gateway, "m", backend.url)
        wait_routable(gateway, "m", 1)
        stream = {**CHAT, "stream": True}
        first = httpx.post(f"{gateway.url}/v1/chat/completions", json=stream, timeout=15)
        # Named as refused, asked again without: the second answer is an error too, so the
        # first was about the request: the client gets that, and nothing is learnt.
        assert first.status_code == 400 and "logprobs must be set" in first.text
        assert backend.posts == 2
        httpx.post(f"{gateway.url}/v1/chat/completions", json=stream, timeout=15)
        assert b"stream_options" in backend.requests[2].body  # still asked
