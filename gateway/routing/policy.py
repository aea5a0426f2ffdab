"""Routing policy: which backend gets a request. Pure functions, no I/O, no clock.

Everything the choice depends on is passed in: the backends of the model (from
the registry snapshot), what the gateway observed of them (`Load`), the time,
a turn counter and random draws. That makes each strategy a table test.

Order of decisions, for every strategy:
1. eligible: healthy, carries every required tag, not already tried in this
   request, below its `max_concurrent`;
2. the best priority tier that still has an eligible backend (0 before 1);
3. slow start: a backend that recovered less than SLOW_START_SECONDS ago is
   skipped with a probability that shrinks as it warms up;
4. the strategy: round_robin, least_loaded, fastest_response or weighted
   (`auto` is scorer.py's, with what the servers report).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SLOW_START_FLOOR = 0.1
STRATEGIES = ("auto", "round_robin", "least_loaded", "fastest_response", "weighted")


BackendKey = tuple[str, str]  # (registration id, model): what is learned is about this


@dataclass(frozen=True)
class Backend:
    """One model of a registered server, as routing sees it (built from the snapshot).

    A registration serving several models is several Backends with one
    `registration_id`: its connection limit and in-flight count are the
    server's; what is learned of faults and endpoints is the pair's (`key`)."""

    registration_id: str
    model_name: str
    base_url: str
    api_key: str | None = None
    healthy: bool = True
    tags: frozenset[str] = field(default_factory=frozenset)
    priority: int = 0
    weight: int = 1
    max_concurrent: int | None = None
    healthy_since: float | None = None  # epoch seconds of the last transition to healthy
    streaming: bool = True
    upstream_model: str | None = None  # what the backend calls model_name, if it differs
    draining: bool = False  # no new requests (POST /admin/servers/{id}/drain)
    owner: str | None = None  # the registration's student_id (shown by /registry)

    @property
    def key(self) -> BackendKey:
        return (self.registration_id, self.model_name)


@dataclass(frozen=True)
class Load:
    """What this gateway process has observed of one backend."""

    in_flight: int = 0
    latency_ms: float | None = None  # moving average; None until a request finished
    first_token_ms: float | None = None  # moving average of time to first token, as it came


NO_LOAD = Load()


@dataclass(frozen=True)
class Draws:
    """Random numbers in [0, 1) supplied by the caller, so choices are reproducible."""

    thinning: float = 0.0
    first: float = 0.0
    second: float = 0.0


def parse_tags(header: str | None) -> frozenset[str]:
    """`X-Gateway-Tags: gpu, Vision` → {"gpu", "vision"}."""
    if not header:
        return frozenset()
    return frozenset(tag.strip().lower() for tag in header.split(",") if tag.strip())


def at_capacity(backend: Backend, load: Load) -> bool:
    return backend.max_concurrent is not None and load.in_flight >= backend.max_concurrent


def is_eligible(
    backend: Backend,
    *,
    required_tags: frozenset[str] = frozenset(),
    exclude: frozenset[str] = frozenset(),
    load: Load = NO_LOAD,
    streaming: bool = False,
) -> bool:
    """Healthy, able to stream if asked, carrying the tags, not excluded, not full."""
    return (
        backend.healthy
        and not backend.draining
        and (backend.streaming or not streaming)
        and required_tags <= backend.tags
        and backend.registration_id not in exclude
        and not at_capacity(backend, load)
    )


def eligible(
    backends: Iterable[Backend],
    *,
    required_tags: frozenset[str] = frozenset(),
    exclude: frozenset[str] = frozenset(),
    loads: Mapping[str, Load] | None = None,
    streaming: bool = False,
) -> list[Backend]:
    loads = loads or {}
    return [
        backend
        for backend in backends
        if is_eligible(
            backend,
            required_tags=required_tags,
            exclude=exclude,
            load=loads.get(backend.registration_id, NO_LOAD),
            streaming=streaming,
        )
    ]


def best_tier(backends: Sequence[Backend]) -> list[Backend]:
    """The backends of the lowest priority number present."""
    if not backends:
        return []
    best = min(backend.priority for backend in backends)
    return [backend for backend in backends if backend.priority == best]


def slow_start_share(healthy_since: float | None, now: float, window: float) -> float:
    """Share of traffic a recovering backend gets: from 10% at recovery to 100% after `window`."""
    if window <= 0 or healthy_since is None:
        return 1.0
    elapsed = now - healthy_since
    if elapsed >= window:
        return 1.0
    return SLOW_START_FLOOR + (1 - SLOW_START_FLOOR) * max(0.0, elapsed) / window


def thin_warming(
    backends: Sequence[Backend], *, now: float, window: float, draw: float
) -> list[Backend]:
    """Drop warming-up backends with probability 1 - share; never drop everyone."""
    kept = [b for b in backends if draw < slow_start_share(b.healthy_since, now, window)]
    return kept or list(backends)


def _pick_index(draw: float, count: int) -> int:
    return min(int(draw * count), count - 1)


def choose(
    strategy: str,
    candidates: Sequence[Backend],
    *,
    loads: Mapping[str, Load],
    now: float,
    slow_start_seconds: float,
    turn: int,
    draws: Draws,
) -> Backend | None:
    """Apply slow start and `strategy` to already-eligible candidates of one tier."""
    if not candidates:
        return None
    ordered = sorted(candidates, key=lambda backend: backend.registration_id)
    if strategy == "weighted":
        weights = [
            b.weight * slow_start_share(b.healthy_since, now, slow_start_seconds) for b in ordered
        ]
        point = draws.first * sum(weights)
        for backend, weight in zip(ordered, weights, strict=True):
            if point < weight:
                return backend
            point -= weight
        return ordered[-1]

    pool = thin_warming(ordered, now=now, window=slow_start_seconds, draw=draws.thinning)
    if strategy == "round_robin":
        return pool[turn % len(pool)]
    if strategy == "least_loaded":
        if len(pool) == 1:
            return pool[0]
        # Power of two choices: two distinct random backends, the less loaded wins.
        first = _pick_index(draws.first, len(pool))
        second = _pick_index(draws.second, len(pool) - 1)
        if second >= first:
            second += 1
        a, b = pool[first], pool[second]

        def pressure(backend: Backend) -> float:
            return loads.get(backend.registration_id, NO_LOAD).in_flight / backend.weight

        return a if pressure(a) <= pressure(b) else b
    if strategy == "fastest_response":
        return min(pool, key=lambda backend: expected_wait(loads, backend, pool))
    raise ValueError(f"unknown routing strategy {strategy!r}; expected one of {STRATEGIES}")


def expected_wait(
    loads: Mapping[str, Load], backend: Backend, pool: Sequence[Backend]
) -> tuple[float, float]:
    """fastest_response's measure: time to first token (updated as each first token
    arrives; a whole answer's latency for requests that do not stream) times the
    requests in flight there plus this one, per unit of weight, so that the fastest
    backend is not sent everything at once (it was: its average moved only when a
    stream ended). A backend not measured yet counts as the measured ones' mean; ties
    (nothing measured) go by in-flight requests."""
    load = loads.get(backend.registration_id, NO_LOAD)
    measured = _measure(load)
    if measured is None:
        known = [
            value
            for other in pool
            if (value := _measure(loads.get(other.registration_id, NO_LOAD))) is not None
        ]
        measured = sum(known) / len(known) if known else 0.0
    in_line = (1 + load.in_flight) / backend.weight
    return (measured * in_line, in_line)


def _measure(load: Load) -> float | None:
    return load.first_token_ms if load.first_token_ms is not None else load.latency_ms


def moving_average(previous: float | None, sample: float, alpha: float = 0.3) -> float:
    """Exponentially weighted moving average of latency."""
    return sample if previous is None else previous + alpha * (sample - previous)


def explain_no_backend(
    backends: Sequence[Backend],
    *,
    required_tags: frozenset[str],
    loads: Mapping[str, Load],
    streaming: bool = False,
) -> str:
    """Why nothing was eligible, in words for the client (no URLs)."""
    healthy = [b for b in backends if b.healthy]
    if not healthy:
        return "no healthy backend serves this model right now"
    healthy = [b for b in healthy if not b.draining]
    if not healthy:
        return "every healthy backend of this model is draining (taken out for maintenance)"
    if streaming:
        healthy = [b for b in healthy if b.streaming]
        if not healthy:
            return "no healthy backend of this model supports streaming"
    tagged = [b for b in healthy if required_tags <= b.tags]
    if not tagged:
        return f"no healthy backend carries the tags {', '.join(sorted(required_tags))}"
    if all(at_capacity(b, loads.get(b.registration_id, NO_LOAD)) for b in tagged):
        return "every healthy backend of this model is at its concurrency limit"
    return "every healthy backend of this model failed this request"
