"""Each worker reads its backends' own load figures, several times a second, off the request path.

Why here and not in healthd: a queue length is worth routing on for a fraction
of a second. healthd would have to write every figure to the database and the
workers to read it back (a write per server four times a second, and the
snapshot's 0.2 s poll on top); a worker that asks the servers itself has them
within SCRAPE_SECONDS and touches no database. The cost is one small GET per
server per SCRAPE_SECONDS per worker, bounded by MAX_SCRAPES_PER_SECOND (a
larger pool is scraped more slowly), and only servers among which there is a
choice are asked (a model with one healthy backend has nothing to decide), and
only under the `auto` strategy (no other one reads the figures).

A server is asked `GET /metrics` (vLLM, SGLang, llama.cpp) and, if that is not
readable, `GET /api/ps` (Ollama); the path that worked is remembered. A server
with neither readable (missing, malformed, over MAX_REPORT_BYTES) is logged once
and asked again after UNREADABLE_RETRY_SECONDS; meanwhile routing counts only
this worker's own requests for it. A scrape never waits on the request path:
it is a task of its own, each GET bounded by SCRAPE_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.routing.balancer import STALE_REPORT_SECONDS, Balancer
from gateway.routing.policy import Backend
from gateway.routing.registry import SnapshotHolder
from gateway.routing.reported.reports import (
    MAX_REPORT_BYTES,
    BadReport,
    Report,
    parse_metrics,
    parse_ollama_ps,
)
from shared.logging import get_logger
from shared.upstream import Transport, UpstreamError, UpstreamRequest

SCRAPE_SECONDS = 0.25
SCRAPE_TIMEOUT_SECONDS = 1.0
MAX_SCRAPES_PER_SECOND = 200
CONCURRENT_SCRAPES = 16
UNREADABLE_RETRY_SECONDS = 60.0
PARSERS: dict[str, Callable[[bytes, float], Report]] = {
    "/metrics": parse_metrics,
    "/api/ps": parse_ollama_ps,
}

log = get_logger("routing")


def servers_to_scrape(by_model: dict[str, tuple[Backend, ...]]) -> dict[str, Backend]:
    """Registration id → one of its Backends, for the servers among which routing chooses:
    healthy, not draining, serving a model that has another such backend."""
    chosen: dict[str, Backend] = {}
    for backends in by_model.values():
        usable = [b for b in backends if b.healthy and not b.draining]
        if len(usable) < 2:
            continue
        for backend in usable:
            chosen.setdefault(backend.registration_id, backend)
    return chosen


@dataclass
class Unreadable:
    until: float
    reason: str


class Scraper:
    """Scrapes the servers of the current snapshot into `balancer.report`."""

    def __init__(
        self,
        holder: SnapshotHolder,
        balancer: Balancer,
        transport: Transport,
        *,
        interval: float = SCRAPE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.holder = holder
        self.balancer = balancer
        self.transport = transport
        self.interval = interval
        self.monotonic = monotonic
        self.paths: dict[str, str] = {}  # registration id → the path that answered
        self.unreadable: dict[str, Unreadable] = {}
        self.errors: dict[str, str] = {}  # registration id → why it has no report now
        self._limit = asyncio.Semaphore(CONCURRENT_SCRAPES)

    async def run(self) -> None:
        """Scrape until cancelled (only under `auto`: no other strategy reads the figures)."""
        if self.balancer.strategy != "auto":
            return
        while True:
            targets = servers_to_scrape(dict(self.holder.current.by_model))
            started = self.monotonic()
            try:
                await asyncio.gather(*(self.scrape(backend) for backend in targets.values()))
            except Exception as error:  # a bug here must not end the scraping for good
                log.error("load scrape round failed", error=str(error), exc_info=True)
            readable = frozenset(t for t in targets if t not in self.unreadable)
            self.balancer.forget_reports(readable)
            for gone in [p for p in self.paths if p not in targets]:
                del self.paths[gone]
            pause = max(self.interval, len(targets) / MAX_SCRAPES_PER_SECOND)
            await asyncio.sleep(max(0.01, pause - (self.monotonic() - started)))

    async def scrape(self, backend: Backend) -> None:
        registration = backend.registration_id
        skipped = self.unreadable.get(registration)
        if skipped is not None and skipped.until > self.monotonic():
            return
        known = self.paths.get(registration)
        paths = [known] if known else list(PARSERS)
        reasons = []
        async with self._limit:
            for path in paths:
                try:
                    report = await self._read(backend, path)
                except (UpstreamError, BadReport) as error:
                    reasons.append(f"{path}: {error}")
                    continue
                self.paths[registration] = path
                self.balancer.report(registration, report)
                if registration in self.unreadable or registration in self.errors:
                    log.info("backend load figures readable again", registration_id=registration)
                self.unreadable.pop(registration, None)
                self.errors.pop(registration, None)
                return
        self._failed(registration, "; ".join(reasons), retry_now=known is not None)

    def _failed(self, registration: str, reason: str, *, retry_now: bool) -> None:
        """A known path that failed once is tried again (with the others) at the next
        round; a server with no readable path is left alone for a while."""
        self.paths.pop(registration, None)
        if retry_now and registration not in self.errors:
            self.errors[registration] = reason
            return
        if registration not in self.unreadable:
            log.warning(
                "no load figures from this backend; routing counts its own requests to it",
                registration_id=registration,
                reason=reason[:300],
            )
        self.errors[registration] = reason
        self.unreadable[registration] = Unreadable(
            self.monotonic() + UNREADABLE_RETRY_SECONDS, reason
        )

    def describe(self, registration: str) -> dict[str, object] | None:
        """The server's load as this worker last read it, for the admin API and pages
        (None: this worker does not scrape it: it is the only backend of its models,
        unhealthy or draining)."""
        report = self.balancer.reports.get(registration)
        problem = self.errors.get(registration)
        if report is None:
            if problem is None:
                return None
            return {"source": None, "stale": True, "problem": problem[:300]}
        age = report.age(self.monotonic())
        return {
            "source": report.source,
            "waiting": report.waiting if report.loaded is None else None,
            "running": report.running if report.loaded is None else None,
            "kv_cache_usage": report.kv_usage,
            "loaded_models": None if report.loaded is None else sorted(report.loaded),
            "age_seconds": round(age, 3),
            "stale": age > STALE_REPORT_SECONDS,
            "problem": problem[:300] if problem else None,
        }

    async def _read(self, backend: Backend, path: str) -> Report:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SCRAPE_TIMEOUT_SECONDS
        headers = {"Accept": "text/plain, application/json", "User-Agent": "multiverse-gateway"}
        if backend.api_key:
            headers["Authorization"] = f"Bearer {backend.api_key}"
        request = UpstreamRequest(backend.base_url, path, headers, method="GET")
        async with self.transport.stream(request, deadline) as answer:
            if answer.status != 200:
                raise BadReport(f"HTTP {answer.status}")
            try:
                body = await answer.read_all(MAX_REPORT_BYTES, deadline)
            except UpstreamError as error:
                raise BadReport(str(error)) from None
        return PARSERS[path](body, self.monotonic())
