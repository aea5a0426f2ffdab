"""/openapi.json built from the routing table and the pydantic models that validate requests.

A route documents itself by being a `DocumentedRoute`; the spec walks the app's
routes, so a route cannot exist without showing up (a test checks that every
route is documented or explicitly hidden). `/docs` is Swagger UI, served from
the `swagger-ui-bundle` package: no CDN.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """Every error, in the OpenAI format."""

    error: ErrorDetail


_PATH_PARAMETER = re.compile(r"{([^}:]+)(?::[^}]+)?}")


@dataclass(frozen=True)
class QueryParameter:
    name: str
    description: str
    schema_type: str = "string"


@dataclass(frozen=True)
class Operation:
    """What the spec says about one method on one path."""

    summary: str
    tag: str
    responses: dict[int, str]
    request_model: type[BaseModel] | None = None
    response_model: type[BaseModel] | None = None
    response_is_list: bool = False
    query: tuple[QueryParameter, ...] = ()
    needs_admin_key: bool = False
    description: str = ""
    success_status: int = 200
    extra_schema: dict[str, Any] = field(default_factory=dict)


class DocumentedRoute(Route):
    """A Route that carries its OpenAPI operation."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        method: str,
        operation: Operation,
    ) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        self.operation = operation


def openapi_path(path: str) -> str:
    """A Starlette path as OpenAPI spells it: `/models/{model:path}` → `/models/{model}`."""
    return _PATH_PARAMETER.sub(r"{\1}", path)


def walk_routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """Every leaf route with its full path."""
    for route in routes:
        if isinstance(route, Mount):
            yield from walk_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            yield prefix + route.path, route


def _models(routes: Iterable[DocumentedRoute]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (ErrorResponse, "serialization"): None
    }
    for route in routes:
        if route.operation.request_model is not None:
            wanted[(route.operation.request_model, "validation")] = None
        if route.operation.response_model is not None:
            wanted[(route.operation.response_model, "serialization")] = None
    return list(wanted)


def build_openapi(routes: Sequence[BaseRoute], *, title: str, version: str) -> dict[str, Any]:
    documented = [
        (path, route) for path, route in walk_routes(routes) if isinstance(route, DocumentedRoute)
    ]
    refs, definitions = models_json_schema(
        _models(route for _, route in documented), ref_template="#/components/schemas/{model}"
    )
    error_ref = refs[(ErrorResponse, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    for path, route in documented:
        op = route.operation
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAMETER.findall(path)
        ]
        parameters += [
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "description": q.description,
                "schema": {"type": q.schema_type},
            }
            for q in op.query
        ]
        responses: dict[str, Any] = {}
        for status, text in op.responses.items():
            if status == op.success_status and op.response_model is not None:
                schema: dict[str, Any] = dict(refs[(op.response_model, "serialization")])
                if op.response_is_list:
                    schema = {"type": "array", "items": schema}
                responses[str(status)] = {
                    "description": text,
                    "content": {"application/json": {"schema": schema}},
                }
            elif status >= 400:
                responses[str(status)] = {
                    "description": text,
                    "content": {"application/json": {"schema": error_ref}},
                }
            else:
                responses[str(status)] = {"description": text}
        operation: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": f"{route.method.lower()}_{route.name}",
            "responses": responses,
            **op.extra_schema,
        }
        if op.description:
            operation["description"] = op.description
        if parameters:
            operation["parameters"] = parameters
        if op.request_model is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.request_model, "validation")]}},
            }
        if op.needs_admin_key:
            operation["security"] = [{"AdminKey": []}]
        paths.setdefault(openapi_path(path), {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "AdminKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "ClientKey": {"type": "http", "scheme": "bearer"},
            },
        },
    }


_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} — API docs</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui"}});
  </script>
</body>
</html>
"""


def openapi_endpoint(title: str, version: str) -> Callable[[Request], Any]:
    """`GET /openapi.json`, built once on first use from the app's routes."""
    cache: dict[str, Any] = {}

    async def openapi_json(request: Request) -> Response:
        if "spec" not in cache:
            cache["spec"] = build_openapi(request.app.routes, title=title, version=version)
        return JSONResponse(cache["spec"])

    return openapi_json


def docs_endpoint(title: str) -> Callable[[Request], Any]:
    page = _DOCS_PAGE.format(title=title)

    async def docs(request: Request) -> Response:
        return HTMLResponse(page)

    return docs
