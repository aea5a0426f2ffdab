"""`/v1/responses/{id}`: a stored Responses API response, asked of the backend that made it.

`GET` (retrieve), `DELETE`, `GET .../input_items` and `POST .../cancel` carry
no model: they go to the registration that made the response (known from the
answer that created it: gateway/routing/affinity.py), with the same deadline,
accounting and error rules as any forwarded request. An id no gateway process
saw made is a 404.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import quote

from starlette.types import Scope

from gateway.admission.charge import Caller
from gateway.context import GatewayContext
from gateway.openapi import DocumentedRoute, Operation
from gateway.proxy.apis import RESPONSES_PATH, ForwardedAPI
from gateway.proxy.client_watch import ClientWatch
from gateway.proxy.endpoint import ProxyEndpoint, request_trace
from gateway.proxy.forward import Answer, Forwarder, Incoming
from gateway.proxy.runtime import ProxyRuntime
from shared.errors import NotFound

_RESPONSES = {
    200: "the backend's answer",
    401: "client key required (REQUIRE_CLIENT_AUTH)",
    404: "no response with this id was made through the gateway (or its backend forgot it)",
    502: "the backend that holds the response failed",
    503: "the backend that holds the response is unavailable",
}


class StoredResponseEndpoint(ProxyEndpoint):
    """One stored-response route: `suffix` after the id ("", "/input_items", "/cancel")."""

    def __init__(self, context: GatewayContext, suffix: str) -> None:
        api = ForwardedAPI(f"{RESPONSES_PATH}/{{response_id}}{suffix}", "stored response")
        super().__init__(context, api, f"/responses/{{response_id}}{suffix}")
        self.suffix = suffix

    async def forward(
        self,
        runtime: ProxyRuntime,
        scope: Scope,
        headers: dict[bytes, bytes],
        body: bytes,
        request_id: str,
        watch: ClientWatch,
        caller: Caller,
    ) -> Answer:
        await runtime.access.count_request(caller)  # a request; no tokens reserved
        response_id: str = scope["path_params"]["response_id"]
        owner = await runtime.responses.owner(response_id)
        backend = runtime.holder.current.server(owner) if owner is not None else None
        if backend is None:
            raise NotFound(
                f"no response with id {response_id!r} was made through this gateway",
                param="response_id",
            )
        path = f"{RESPONSES_PATH}/{quote(response_id, safe='')}{self.suffix}"
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        content_type = headers.get(b"content-type")
        incoming = Incoming(
            path=path,
            body=body,
            content_type=content_type.decode("latin-1") if content_type else None,
            tags_header=None,
            request_id=request_id,
            trace=request_trace(headers),
            method=scope["method"],
            endpoint=self.api.path,
        )
        watch.start()
        # The stored response is asked for by its id: no model to rename.
        backend = dataclasses.replace(backend, upstream_model=None)
        return await Forwarder(runtime, incoming, watch).run_on(backend)


def stored_response_routes(context: GatewayContext) -> list[DocumentedRoute]:
    """Mounted at /v1, beside the forwarding routes."""
    routes = []
    for method, suffix, summary in (
        ("GET", "", "Retrieve a stored response from the backend that made it"),
        ("DELETE", "", "Delete a stored response on the backend that made it"),
        ("GET", "/input_items", "A stored response's input items"),
        ("POST", "/cancel", "Cancel a background response"),
    ):
        endpoint = StoredResponseEndpoint(context, suffix)
        operation = Operation(
            summary=summary,
            tag="inference",
            responses=_RESPONSES,
            extra_schema={"security": [{}, {"ClientKey": []}]},
        )
        routes.append(
            DocumentedRoute(endpoint.route_path, endpoint, method=method, operation=operation)
        )
    return routes
