"""`GET /metrics`: the Prometheus text of every worker.

With several workers each process writes its metrics (gateway/accounting/metrics.py)
to memory-mapped files in PROMETHEUS_MULTIPROC_DIR, which `gateway.main` makes
empty before the workers start; whichever worker answers adds them all up.
Open unless METRICS_API_KEY is set; then a Bearer token.

A worker that dies leaves its files behind. Its counters must stay (the totals
would go down otherwise), but its live gauges (in flight, healthy, ages) would be
added in or win a max forever: uvicorn restarts a dead worker without a hook to
tell anyone, so whichever worker answers retires the live gauges of every pid in
the folder that no longer runs (prometheus_client's `mark_process_dead`).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.accounting import metrics
from gateway.accounting.share_gauges import share_exposition
from gateway.context import context_of
from gateway.openapi import DocumentedRoute, Operation
from gateway.proxy.runtime import ProxyRuntime
from shared.errors import AuthenticationRequired, PermissionDenied

LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to retire
    return True


def retire_dead_workers(folder: Path, running: Callable[[int], bool] = pid_running) -> list[int]:
    """Drop the live gauges of the processes that wrote to `folder` and have ended."""
    pids = {
        int(found.group(1))
        for path in folder.glob("gauge_live*.db")
        if (found := LIVE_GAUGE_FILE.fullmatch(path.name))
    }
    dead = sorted(pid for pid in pids if not running(pid))
    for pid in dead:
        with contextlib.suppress(FileNotFoundError):  # another worker was quicker
            mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
    return dead


def _registry() -> CollectorRegistry:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        retire_dead_workers(Path(folder))
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


async def exposition(request: Request) -> Response:
    """The Prometheus text; a Bearer METRICS_API_KEY when one is set."""
    key = context_of(request).settings.metrics_api_key.get_secret_value()
    if key:
        given = request.headers.get("authorization", "")
        if not given:
            raise AuthenticationRequired(
                "GET /metrics needs Authorization: Bearer <METRICS_API_KEY>"
            )
        token = given.removeprefix("Bearer ").strip()
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise PermissionDenied("invalid metrics key")
    runtime = context_of(request).proxy
    # This worker's counts as of now; the others' are at most a flush (1 s) old.
    metrics.flush(runtime.balancer.in_flight if runtime is not None else None)
    context = context_of(request)
    shares = await run_in_threadpool(
        share_exposition, context.database, context.settings.routing_strategy, time.time()
    )
    return Response(generate_latest(_registry()) + shares, media_type=CONTENT_TYPE_LATEST)


def metrics_route() -> DocumentedRoute:
    return DocumentedRoute(
        "/metrics",
        exposition,
        method="GET",
        operation=Operation(
            summary="Prometheus metrics of every worker",
            tag="system",
            responses={
                200: "Prometheus text format",
                401: "METRICS_API_KEY is set: send it as a Bearer token",
                403: "wrong metrics key",
            },
        ),
    )


def in_flight_by_backend(runtime: ProxyRuntime | None) -> dict[str, float]:
    """Requests in flight per backend, all workers' (each worker's as of its last flush)."""
    metrics.flush(runtime.balancer.in_flight if runtime is not None else None)
    found: dict[str, float] = {}
    for family in _registry().collect():
        if family.name != "gateway_backend_in_flight":
            continue
        for sample in family.samples:
            backend = sample.labels.get("backend", "")
            found[backend] = found.get(backend, 0.0) + sample.value
    return found
