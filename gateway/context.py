"""What request handlers share, built once per app by `create_app`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from starlette.requests import Request

from shared.db import Database
from shared.logging import Redactor
from shared.settings import Settings
from shared.urls import Resolver

if TYPE_CHECKING:
    from gateway.proxy.runtime import ProxyRuntime


@dataclass
class GatewayContext:
    """The app's state, typed; stored on `app.state.context`."""

    settings: Settings
    database: Database
    redactor: Redactor
    resolver: Resolver
    started_monotonic: float = field(default_factory=time.monotonic)
    probe_client: httpx.AsyncClient | None = None
    proxy: ProxyRuntime | None = None

    def probe_http(self) -> httpx.AsyncClient:
        if self.probe_client is None:
            raise RuntimeError("the probe client exists only while the app runs (lifespan)")
        return self.probe_client


def context_of(request: Request) -> GatewayContext:
    context: GatewayContext = request.app.state.context
    return context
