"""The proxy's moving parts, built once per app by `gateway.app.build_runtime`."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from starlette.requests import Request

from gateway.accounting.feedback import Feedback
from gateway.accounting.request_log import RequestLog
from gateway.admission.access import ClientAccess
from gateway.context import context_of
from gateway.routing.affinity import ResponseOwners
from gateway.routing.balancer import Balancer
from gateway.routing.learned import Learned
from gateway.routing.registry import SnapshotHolder
from gateway.routing.scraper import Scraper
from shared.errors import ServiceUnavailable
from shared.settings import Settings
from shared.upstream import Transport

LARGE_BODY_PARSERS = 2


@dataclass
class ProxyRuntime:
    settings: Settings
    holder: SnapshotHolder
    balancer: Balancer
    feedback: Feedback
    responses: ResponseOwners
    access: ClientAccess
    request_log: RequestLog
    transport: Transport
    scraper: Scraper  # the servers' own load figures, into the balancer
    # Large bodies are parsed here (gateway/proxy/endpoint.py), never on the loop, and a
    # few at a time: a flood of them waits its turn instead of taking every thread of the
    # default executor, which the database's work needs.
    large_bodies: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(LARGE_BODY_PARSERS, "large-body")
    )

    @property
    def learned(self) -> Learned:
        """What was learned of each (registration, model): faults, lacking paths, ..."""
        return self.balancer.learned


def admitted_runtime(request: Request) -> ProxyRuntime:
    """The proxy's runtime, once the client passed its key and rate checks."""
    runtime = context_of(request).proxy
    if runtime is None:
        raise ServiceUnavailable("the gateway is starting or stopping")
    runtime.access.admit(
        request.headers.get("authorization"), request.client.host if request.client else "unknown"
    )
    return runtime
