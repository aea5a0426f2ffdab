"""/openapi.json and /docs: every route documented, from the models that validate it."""

from __future__ import annotations

import re

import httpx
from openapi_spec_validator import validate

from gateway.openapi import DocumentedRoute, openapi_path, walk_routes
from tests.support import ThreadedServer

HIDDEN = {"/openapi.json", "/docs"}


def test_spec_is_valid_and_covers_every_route(gateway: ThreadedServer) -> None:
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    validate(spec)
    app = gateway.server.config.app
    documented = set()
    hidden = {path for path, route in walk_routes(app.routes) if not route.include_in_schema}
    assert hidden >= HIDDEN | {"/", "/register"}  # docs and web pages are hidden on purpose
    for path, route in walk_routes(app.routes):
        if path in hidden:
            continue
        assert isinstance(route, DocumentedRoute), f"{path} is not documented"
        documented.add((openapi_path(path), route.method.lower()))
    in_spec = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert documented == in_spec


def test_spec_uses_the_validating_models(gateway: ThreadedServer) -> None:
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    register = spec["paths"]["/admin/register"]["post"]
    schema_ref = register["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert schema["required"] == ["endpoint_url"]  # no model_name: every model it lists
    assert schema["additionalProperties"] is False
    named = schema["properties"]["model_name"]["anyOf"]
    assert [alternative.get("type") for alternative in named] == ["string", "null"]
    assert "pattern" in named[0]
    assert register["security"] == [{"AdminKey": []}]
    assert set(register["responses"]) >= {"201", "400", "401", "403", "503"}


def test_docs_are_served_without_a_cdn(gateway: ThreadedServer) -> None:
    page = httpx.get(f"{gateway.url}/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = httpx.get(f"{gateway.url}/docs/static/{asset}")
        assert response.status_code == 200 and len(response.content) > 1000


RESERVED_SUFFIXES = (".invalid", ".example", ".test", ".localhost")
RESERVED_HOSTS = {"localhost", "127.0.0.1", "[::1]", "example.com", "example.org", "example.net"}
URL = re.compile(r"https?://([^/\s\"'<>?#]+)", re.IGNORECASE)


def examples_in(node: object, inside: bool = False) -> list[str]:
    """Every string under an `example` or `examples` key of the spec, at any depth."""
    if isinstance(node, dict):
        return [
            text
            for key, value in node.items()
            for text in examples_in(value, inside or key in ("example", "examples"))
        ]
    if isinstance(node, list):
        return [text for item in node for text in examples_in(item, inside)]
    return [node] if inside and isinstance(node, str) else []


def reserved(netloc: str) -> bool:
    host = netloc.rsplit(":", 1)[0] if not netloc.endswith("]") else netloc
    host = host.lower()
    return (
        host in RESERVED_HOSTS
        or host.endswith(RESERVED_SUFFIXES)
        or any(host.endswith(f".{name}") for name in ("example.com", "example.org", "example.net"))
    )


def test_examples_name_only_reserved_hosts(gateway: ThreadedServer) -> None:
    """A fuzzer follows the examples: a real name in one makes the gateway resolve it
    (#19 item 24)."""
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    hosts = [host for text in examples_in(spec) for host in URL.findall(text)]
    assert hosts, "the spec's examples name no URL at all"
    assert [host for host in hosts if not reserved(host)] == []
