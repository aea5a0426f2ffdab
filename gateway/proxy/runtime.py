"""The proxy's moving parts, built once per app by `gateway.app.build_runtime`."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.accounting.feedback import Feedback
from gateway.accounting.request_log import RequestLog
from gateway.admission.access import ClientAccess
from gateway.context import context_of
from gateway.routing.affinity import ResponseOwners
from gateway.routing.balancer import Balancer
from gateway.routing.learned import Learned
from gateway.routing.registry import SnapshotHolder
from shared.errors import ServiceUnavailable
from shared.settings import Settings
from shared.upstream import Transport


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
