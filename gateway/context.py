"""What request handlers share, built once per app by `create_app`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from shared.db import Database
from shared.logging import Redactor
from shared.settings import Settings
from shared.upstream import Transport
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
    probes: Transport | None = None  # for registration probes (not the proxy's pool)
    registry_watch: asyncio.Task[None] | None = None  # keeps the snapshot current
    proxy: ProxyRuntime | None = None

    async def registry_written(self) -> None:
        """A registry write committed: this worker routes by it before the answer goes out."""
        if self.proxy is not None:
            await self.proxy.holder.catch_up()

    async def keys_written(self) -> None:
        """A client key or group write committed: this worker honours it before the
        answer goes out (the others within the keys' poll)."""
        if self.proxy is not None:
            await self.proxy.access.keys.catch_up()

    def probe_transport(self) -> Transport:
        if self.probes is None:
            raise RuntimeError("the probe transport exists only while the app runs (lifespan)")
        return self.probes


def context_of(request: Request) -> GatewayContext:
    context: GatewayContext = request.app.state.context
    return context
