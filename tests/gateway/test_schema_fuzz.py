"""Schemathesis over `/openapi.json`: generated requests never get a 5xx, and every error
is in its API's shape (OpenAI's, or Ollama's and Anthropic's on their routes). Bounded (a
few examples per operation, no shrinking, no example database), against a real gateway on
127.0.0.1 with one registered backend.

Driven through schemathesis's strategies and Hypothesis directly: its pytest plugin
(`from_fixture`) does not run under pytest 9."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from gateway.cli.demo_backend import create_demo_app
from tests.gateway.proxy.test_proxy import HEADERS, register
from tests.support import ThreadedServer

EXAMPLES_PER_OPERATION = 12


async def no_names(host: str, port: int) -> list[str]:
    if host == "localhost":
        return ["127.0.0.1"]
    raise OSError(f"no DNS in tests: {host!r} not looked up")


def assert_error_shape(path: str, body: dict[str, Any]) -> None:
    """Each API's own error shape: Ollama's on /api/, Anthropic's on /v1/messages (#24),
    OpenAI's everywhere else."""
    if path.startswith("/api/"):
        assert isinstance(body["error"], str)
    elif path.startswith("/v1/messages"):
        assert body["type"] == "error" and {"type", "message"} <= set(body["error"])
    else:
        assert {"message", "type", "param", "code"} <= set(body["error"])


def test_no_5xx_and_every_error_in_the_openai_shape(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    # Generated URLs name any host: looked up by the system, each would be DNS traffic.
    # Names are refused here, as a resolver with no answer would (literals are dialled).
    gateway = start_gateway(resolver=no_names, rate_limit_per_minute=0)
    with ThreadedServer(create_demo_app("m")) as backend:
        register(gateway, "m", backend.url)
        spec = httpx.get(f"{gateway.url}/openapi.json").json()
        schema = schemathesis.openapi.from_dict(spec)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) > 10
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def no_server_error(case: schemathesis.Case) -> None:
                response = case.call(base_url=gateway.url, headers=HEADERS, timeout=30)
                assert response.status_code < 500, (case.method, case.path, response.text)
                content_type = "".join(response.headers.get("content-type", []))
                if response.status_code >= 400 and content_type.startswith("application/json"):
                    assert_error_shape(case.path, response.json())

            no_server_error()
