"""The proxy's moving parts, built once per app by `gateway.app.build_runtime`."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from gateway.accounting import metrics
from gateway.accounting.feedback import Feedback
from gateway.accounting.request_log import RequestLog
from gateway.admission.access import ClientAccess
from gateway.admission.charge import Account, Caller
from gateway.admission.fair_queue import FairQueue
from gateway.context import context_of
from gateway.routing.affinity import ResponseOwners
from gateway.routing.balancer import Balancer
from gateway.routing.learned import Learned
from gateway.routing.registry import SnapshotHolder
from gateway.routing.reported.scraper import Scraper
from shared.errors import ServiceUnavailable
from shared.settings import Settings
from shared.upstream import Transport

if TYPE_CHECKING:
    from gateway.admission.backend_slots import BackendSlots  # redis-py: only with Redis

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
    # With REDIS_URL: the slots of registrations with a max_concurrent, across instances.
    slots: BackendSlots | None = None

    # Who gets the next freed slot when a model's backends are all full (per worker).
    queue: FairQueue = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.queue = FairQueue(
            max_per_client=settings.queue_max_per_key, max_total=settings.queue_max_total
        )

    def account(self, account: Account) -> None:
        """A keyed client's request ended: its usage per person, and its group's metrics."""
        client = account.caller.client
        if client is None:
            return
        if account.limited is not None:  # a 429: counted, not served
            metrics.CLIENT_LIMITED.labels(client.group or "", account.limited).inc()
            return
        metrics.RECORDER.client(client.group or "", account.ok, account.usage)
        if client.key_id is not None:
            self.feedback.record_client(
                client.key_id,
                account.model,
                ok=account.ok,
                latency_ms=account.latency_ms,
                usage=account.usage,
            )

    @property
    def learned(self) -> Learned:
        """What was learned of each (registration, model): faults, lacking paths, ..."""
        return self.balancer.learned


async def admitted(request: Request) -> tuple[ProxyRuntime, Caller]:
    """The proxy's runtime and the caller, once its key passed (a request that uses no
    backend: a list of models, a route)."""
    runtime = context_of(request).proxy
    if runtime is None:
        raise ServiceUnavailable("the gateway is starting or stopping")
    caller = runtime.access.identify(
        request.headers.get("authorization"),
        request.client.host if request.client else "unknown",
        request.headers.get("x-api-key"),
    )
    # Lists of models and the like are read from memory: they check the key but do not
    # count against its limits (clients such as Open WebUI poll them).
    return runtime, caller


async def admitted_runtime(request: Request) -> ProxyRuntime:
    """The proxy's runtime, once the client passed its key and rate checks."""
    runtime, _ = await admitted(request)
    return runtime
