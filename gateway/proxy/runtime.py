"""The proxy's moving parts, built once per app by `gateway.app.build_runtime`."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.accounting.feedback import Feedback
from gateway.accounting.request_log import RequestLog
from gateway.admission.access import ClientAccess
from gateway.routing.affinity import ResponseOwners
from gateway.routing.balancer import Balancer
from gateway.routing.capabilities import EndpointMemory
from gateway.routing.registry import SnapshotHolder
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
    endpoints: EndpointMemory = field(default_factory=EndpointMemory)
    # Backends that answered 400 to stream_options.include_usage: not asked again.
    refuse_usage_option: set[str] = field(default_factory=set)
