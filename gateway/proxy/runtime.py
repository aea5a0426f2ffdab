"""The proxy's moving parts, built once per app by `gateway.app.build_runtime`."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.accounting.feedback import Feedback
from gateway.accounting.request_log import RequestLog
from gateway.admission.access import ClientAccess
from gateway.routing.affinity import ResponseOwners
from gateway.routing.balancer import Balancer
from gateway.routing.learned import Learned
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

    @property
    def learned(self) -> Learned:
        """What was learned of each (registration, model): faults, lacking paths, ..."""
        return self.balancer.learned
