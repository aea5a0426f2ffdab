"""The stateful side of routing: turn counters, in-flight counts, observed latency.

One Balancer per gateway process (on the app context). It feeds the pure
policies in `policy.py`, `scorer.py` and `outlier.py` and remembers what
happened: its own counts, and the servers' reports that the scraper
(`scraper.py`) hands it. It does no I/O.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

from gateway.routing import policy as routing
from gateway.routing.learned import Learned
from gateway.routing.outlier import OutlierPolicy
from gateway.routing.policy import Backend, Draws, Load
from gateway.routing.reported.reports import Report
from gateway.routing.reported.scorer import (
    NO_HINT,
    RUNNING_WEIGHT,
    Hint,
    View,
    choose_auto,
    hash_log,
)
from shared.logging import get_logger

log = get_logger("api")
STALE_REPORT_SECONDS = 2.0  # an older report is no report: the load is unknown, not zero
MIN_TOKENS_FOR_SPEED = 16  # a shorter answer's time is mostly overhead, not decoding
# A registration found full across instances (Redis's slots) is not picked for this long,
# or until this process frees one of its slots: waiters look again each POLL_SECONDS.
FULL_ELSEWHERE_SECONDS = 0.25
# Affinity keys whose rendezvous hashes are kept, and hashes in all (a few MB at most):
# past either, all are forgotten at once (a conversation's next turn hashes again).
KEYS_REMEMBERED = 4096
HASHES_REMEMBERED = 65_536


class Balancer:
    def __init__(
        self,
        strategy: str,
        slow_start_seconds: float,
        *,
        learned: Learned | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if strategy not in routing.STRATEGIES:
            raise ValueError(f"unknown routing strategy {strategy!r}")
        self.strategy = strategy
        self.slow_start_seconds = slow_start_seconds
        self.clock = clock
        self.rng = rng
        self.monotonic = monotonic
        self.loads: dict[str, Load] = {}
        self.turns: dict[str, int] = {}
        # By registration id: the server's last report (scraper.py), the requests this
        # process sent it since that are still on their way, and its seconds per output
        # token (a moving average).
        self.reports: dict[str, Report] = {}
        self.sent_since: dict[str, int] = {}
        self.token_seconds: dict[str, float] = {}
        self.speed_steps: dict[str, int] = {}  # log2 of token_seconds, rounded
        # By affinity key: its rendezvous hash per registration id (scorer.hash_log), the
        # same at every turn of a conversation, so hashed once, not at every request.
        self.hash_logs: dict[bytes, dict[str, float]] = {}
        self.hashes_kept = 0
        # Outlier state and the rest of what is learned, by (registration, model).
        self.learned = learned or Learned(OutlierPolicy(), monotonic)
        # Registrations full across instances, until when (monotonic): `full_elsewhere`.
        self.full_until: dict[str, float] = {}

    def pick(
        self,
        backends: tuple[Backend, ...],
        *,
        required_tags: frozenset[str],
        exclude: frozenset[str],
        streaming: bool,
        hint: Hint = NO_HINT,
    ) -> Backend | None:
        """The backend for one attempt (None: no backend is eligible). `hint` (the
        request's affinity key and size) is read by the `auto` strategy only."""
        if self.full_until:
            exclude = exclude | self._full_now()
        if len(backends) == 1:
            # The common case of a model with one backend: nothing to choose
            # (every strategy returns the only candidate).
            only = backends[0]
            load = self.loads.get(only.registration_id, routing.NO_LOAD)
            if routing.is_eligible(
                only, required_tags=required_tags, exclude=exclude, load=load, streaming=streaming
            ):
                return only
            return None
        candidates = routing.best_tier(
            routing.eligible(
                backends,
                required_tags=required_tags,
                exclude=exclude,
                loads=self.loads,
                streaming=streaming,
            )
        )
        if not candidates:
            return None
        if self.strategy == "auto":
            if len(candidates) == 1:  # (as thinning and scoring would: the only one)
                return candidates[0]
            pool = routing.thin_warming(
                candidates, now=self.clock(), window=self.slow_start_seconds, draw=self.rng()
            )
            key = hint.affinity
            logs = None if key is None else self._hash_logs(key, pool)
            return choose_auto(pool, self.views(pool), hint, logs)
        model = candidates[0].model_name
        turn = self.turns.get(model, 0)
        self.turns[model] = turn + 1
        return routing.choose(
            self.strategy,
            candidates,
            loads=self.loads,
            now=self.clock(),
            slow_start_seconds=self.slow_start_seconds,
            turn=turn,
            draws=Draws(self.rng(), self.rng(), self.rng()),
        )

    def full_elsewhere(self, backend_id: str) -> None:
        """Every slot of this registration is taken across the instances (Redis): treat
        it as full a moment (a request that picks it waits in the fair queue)."""
        self.full_until[backend_id] = self.monotonic() + FULL_ELSEWHERE_SECONDS

    def _full_now(self) -> frozenset[str]:
        now = self.monotonic()
        for backend_id in [b for b, until in self.full_until.items() if until <= now]:
            del self.full_until[backend_id]
        return frozenset(self.full_until)

    def _hash_logs(self, key: bytes, pool: list[Backend]) -> dict[str, float]:
        """The key's rendezvous hashes for the backends of `pool`, each computed once."""
        logs = self.hash_logs.get(key)
        if logs is None:
            if len(self.hash_logs) >= KEYS_REMEMBERED or self.hashes_kept >= HASHES_REMEMBERED:
                self.hash_logs.clear()
                self.hashes_kept = 0
            logs = self.hash_logs[key] = {}
        for backend in pool:
            backend_id = backend.registration_id
            if backend_id not in logs:
                logs[backend_id] = hash_log(key, backend_id)
                self.hashes_kept += 1
        return logs

    def explain(
        self, backends: tuple[Backend, ...], *, required_tags: frozenset[str], streaming: bool
    ) -> str:
        return routing.explain_no_backend(
            backends, required_tags=required_tags, loads=self.loads, streaming=streaming
        )

    def faulted(self, backend: Backend, peers: tuple[Backend, ...], reason: str) -> bool:
        """A fault of `backend` for its model; True when it ejected the pair."""
        seconds = self.learned.faulted(backend, peers)
        if seconds is None:
            return False
        log.warning(
            "backend ejected from routing",
            registration_id=backend.registration_id,
            model=backend.model_name,
            seconds=round(seconds, 1),
            reason=reason,
        )
        return True

    def in_flight(self) -> dict[str, int]:
        """Requests on their way to or from each backend now (this process)."""
        return {backend_id: load.in_flight for backend_id, load in self.loads.items()}

    def started(self, backend_id: str) -> None:
        load = self.loads.get(backend_id, routing.NO_LOAD)
        self.loads[backend_id] = Load(load.in_flight + 1, load.latency_ms, load.first_token_ms)
        self.sent_since[backend_id] = self.sent_since.get(backend_id, 0) + 1

    def finished(self, backend_id: str, latency_ms: float | None) -> None:
        """One attempt ended; `latency_ms` is given when it succeeded."""
        load = self.loads.get(backend_id, routing.NO_LOAD)
        latency = (
            load.latency_ms
            if latency_ms is None
            else routing.moving_average(load.latency_ms, latency_ms)
        )
        self.loads[backend_id] = Load(max(0, load.in_flight - 1), latency, load.first_token_ms)
        self.full_until.pop(backend_id, None)  # one of its slots is free again
        sent = self.sent_since.get(backend_id, 0)
        if sent:  # (one sent since the report, or one it counted: either way one fewer)
            self.sent_since[backend_id] = sent - 1

    def first_token(self, backend_id: str, first_token_ms: float) -> None:
        """A stream's first event arrived: fastest_response learns at once, not at its end."""
        load = self.loads.get(backend_id, routing.NO_LOAD)
        ttft = routing.moving_average(load.first_token_ms, first_token_ms)
        self.loads[backend_id] = Load(load.in_flight, load.latency_ms, ttft)

    def decoded(self, backend_id: str, seconds: float, tokens: int) -> None:
        """An answer of `tokens` output tokens took `seconds` after its first token (or
        in all, unstreamed): the server's speed, as `auto` weighs it. Each request
        running beside it slows a decode step by RUNNING_WEIGHT (scorer.py's model),
        so the time per token is brought back to an empty batch's: a fast server that
        is given more work must not look slow for it."""
        if tokens < MIN_TOKENS_FOR_SPEED or seconds <= 0:
            return
        report = self.fresh_report(backend_id, self.monotonic())
        batch = report.running if report is not None else 0.0
        per_token = seconds / tokens / (1 + RUNNING_WEIGHT * batch)
        previous = self.token_seconds.get(backend_id)
        average = routing.moving_average(previous, per_token, 0.2)
        self.token_seconds[backend_id] = average
        self.speed_steps[backend_id] = round(math.log2(average))

    def report(self, backend_id: str, report: Report) -> None:
        """The server's own figures (from the scraper): what this process sent before
        them is in them."""
        self.reports[backend_id] = report
        self.sent_since[backend_id] = 0

    def forget_reports(self, keep: frozenset[str]) -> None:
        """Drop the reports of servers no longer scraped (gone, unhealthy, unreadable)."""
        for backend_id in [b for b in self.reports if b not in keep]:
            del self.reports[backend_id]

    def fresh_report(self, backend_id: str, now: float) -> Report | None:
        report = self.reports.get(backend_id)
        if report is None or report.age(now) > STALE_REPORT_SECONDS:
            return None
        return report

    def views(self, backends: list[Backend]) -> dict[str, View]:
        """What `auto` knows of each backend now. Speeds are relative to the fastest
        known, on a grid of powers of two (each backend's time per token is rounded so
        when measured: measurement noise must not move conversations)."""
        now = self.monotonic()
        steps = self.speed_steps
        fastest = 0
        if steps:
            known = [steps[b.registration_id] for b in backends if b.registration_id in steps]
            fastest = min(known) if known else 0
        reports, loads, sent_since = self.reports, self.loads, self.sent_since
        views: dict[str, View] = {}
        for backend in backends:
            backend_id = backend.registration_id
            report = reports.get(backend_id)
            if report is not None and now - report.at > STALE_REPORT_SECONDS:
                report = None
            step = steps.get(backend_id) if steps else None
            load = loads.get(backend_id)
            views[backend_id] = View(
                0 if load is None else load.in_flight,
                sent_since.get(backend_id, 0),
                report,
                1.0 if step is None else 2.0 ** (fastest - step),
            )
        return views
