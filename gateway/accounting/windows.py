"""Pool statistics over a window of minutes: pure functions over per-minute counts.

Every worker adds what it served to `usage_minutes` (one row per minute,
backend and model: gateway/accounting/feedback.py). Latency and time to first
token are counts per fixed bucket, so rows of many workers and minutes merge
by adding, and a percentile is read off the merged counts (linear within its
bucket: as exact as the buckets, which is what Prometheus' histogram_quantile
does too).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Upper edges of the latency buckets, in milliseconds; the last is open.
EDGES_MS = (
    1,
    2.5,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10_000,
    30_000,
    60_000,
    120_000,
    300_000,
)
BUCKETS = len(EDGES_MS) + 1
WINDOWS = {"5m": 5, "1h": 60, "24h": 24 * 60}


def bucket_of(milliseconds: float) -> int:
    return bisect.bisect_left(EDGES_MS, milliseconds)


def percentile(counts: list[int], fraction: float) -> float | None:
    """The `fraction` quantile (0.5, 0.95) of bucketed counts, in ms; None if empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = fraction * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            lower = EDGES_MS[index - 1] if index > 0 else 0
            if index >= len(EDGES_MS):
                return float(lower)  # the open bucket: at least its lower edge
            upper = EDGES_MS[index]
            return round(lower + (upper - lower) * (rank - seen) / count, 1)
        seen += count
    return float(EDGES_MS[-1])


@dataclass
class Counts:
    """What was served in some minutes through some backends: added up, never averaged.

    `requests` counts attempts (a backend's view: each try it got); `retried`, those
    of them that failed and whose request went on to another backend. A client saw
    `requests - retried` requests, of which `failures - retried` failed."""

    requests: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    first_token: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    retried: int = 0

    def add(self, other: Counts) -> Counts:
        self.requests += other.requests
        self.retried += other.retried
        self.failures += other.failures
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latency = [a + b for a, b in zip(self.latency, _sized(other.latency), strict=True)]
        self.first_token = [
            a + b for a, b in zip(self.first_token, _sized(other.first_token), strict=True)
        ]
        return self

    def observe(
        self,
        *,
        ok: bool,
        latency_ms: float,
        first_token_ms: float | None,
        usage: tuple[int, int] | None,
    ) -> None:
        self.requests += 1
        self.failures += 0 if ok else 1
        self.latency[bucket_of(latency_ms)] += 1
        if first_token_ms is not None:
            self.first_token[bucket_of(first_token_ms)] += 1
        if usage is not None:
            self.prompt_tokens += usage[0]
            self.completion_tokens += usage[1]

    @property
    def client_requests(self) -> int:
        return self.requests - self.retried

    def summary(self, *, attempts: bool = False) -> dict[str, float | int | None]:
        """Requests and failures as clients saw them, or (`attempts`: a backend's figures)
        as the backend did, failed-over tries included. Both say the attempts."""
        requests = self.requests if attempts else self.client_requests
        failures = self.failures if attempts else self.failures - self.retried
        return {
            "requests": requests,
            "failures": failures,
            "attempts": self.requests,
            "retried": self.retried,
            "success_rate": (
                round(100 * (requests - failures) / requests, 2) if requests else None
            ),
            "latency_p50_ms": percentile(self.latency, 0.5),
            "latency_p95_ms": percentile(self.latency, 0.95),
            "first_token_p50_ms": percentile(self.first_token, 0.5),
            "first_token_p95_ms": percentile(self.first_token, 0.95),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def _sized(counts: list[int]) -> list[int]:
    """Counts stored with another number of buckets (a future change) still add up."""
    if len(counts) == BUCKETS:
        return counts
    return (list(counts) + [0] * BUCKETS)[:BUCKETS]


@dataclass(frozen=True)
class Row:
    """One `usage_minutes` row."""

    minute: int
    backend: str
    model: str
    counts: Counts


@dataclass(frozen=True)
class Server:
    """What the statistics show of a registration."""

    id: str
    owner: str | None
    health: str
    last_error: str | None
    weight: int
    priority: int
    models: tuple[str, ...]
    # How a person tells it from the others (never its key, nor a URL's path or userinfo).
    endpoint_host: str = ""
    description: str | None = None
    draining: bool = False


def intended_shares(servers: Iterable[Server], model: str, strategy: str) -> dict[str, float]:
    """The share of `model`'s requests each backend is meant to get: the best priority
    tier only, by weight under `weighted`, evenly under the other strategies; a draining
    backend is meant to get nothing new."""
    serving = [s for s in servers if model in s.models and s.health == "healthy" and not s.draining]
    if not serving:
        return {}
    best = min(s.priority for s in serving)
    tier = [s for s in serving if s.priority == best]
    weights = {s.id: (s.weight if strategy == "weighted" else 1) for s in tier}
    total = sum(weights.values())
    return {server_id: weight / total for server_id, weight in weights.items()}


def summarize(
    rows: Iterable[Row],
    servers: Mapping[str, Server],
    *,
    first_minute: int,
    minutes: int,
    strategy: str,
    in_flight: Mapping[str, float],
) -> dict[str, object]:
    """Totals, per model, per backend (with its load-balancing share), per owner, and a
    series per minute for the charts."""
    total = Counts()
    by_model: dict[str, Counts] = {}
    by_backend: dict[str, Counts] = {}
    by_owner: dict[str, Counts] = {}
    model_of_backend: dict[tuple[str, str], int] = {}
    series = [Counts() for _ in range(minutes)]
    series_models: dict[str, list[int]] = {}
    for row in rows:
        offset = row.minute - first_minute
        if not 0 <= offset < minutes:
            continue
        total.add(row.counts)
        by_model.setdefault(row.model, Counts()).add(row.counts)
        by_backend.setdefault(row.backend, Counts()).add(row.counts)
        owner = servers[row.backend].owner if row.backend in servers else None
        by_owner.setdefault(owner or "(none)", Counts()).add(row.counts)
        key = (row.model, row.backend)
        model_of_backend[key] = model_of_backend.get(key, 0) + row.counts.requests
        series[offset].add(row.counts)
        per_model = series_models.setdefault(row.model, [0] * minutes)
        per_model[offset] += row.counts.requests
    shares = backend_shares(model_of_backend, servers, strategy)
    backends = []
    for server_id in sorted(set(by_backend) | set(servers)):
        server = servers.get(server_id)
        counts = by_backend.get(server_id, Counts())
        backends.append(
            {
                "registration_id": server_id,
                **counts.summary(attempts=True),
                "in_flight": int(in_flight.get(server_id, 0)),
                "health": server.health if server else "deregistered",
                "last_error": server.last_error if server else None,
                "owner": server.owner if server else None,
                "endpoint_host": server.endpoint_host if server else "",
                "description": server.description if server else None,
                "shares": [
                    {"model": s.model, "share": s.share, "intended_share": s.intended}
                    for s in shares
                    if s.backend == server_id
                ],
            }
        )
    return {
        "totals": total.summary(),
        "models": {model: counts.summary() for model, counts in sorted(by_model.items())},
        "backends": backends,
        "owners": {owner: counts.summary() for owner, counts in sorted(by_owner.items())},
        "series": {
            "minutes": [(first_minute + i) * 60 for i in range(minutes)],
            "requests": [c.client_requests for c in series],
            "attempts": [c.requests for c in series],
            "error_rate": [
                round(100 * (c.failures - c.retried) / c.client_requests, 2)
                if c.client_requests
                else None
                for c in series
            ],
            "latency_p50_ms": [percentile(c.latency, 0.5) for c in series],
            "latency_p95_ms": [percentile(c.latency, 0.95) for c in series],
            "first_token_p50_ms": [percentile(c.first_token, 0.5) for c in series],
            "first_token_p95_ms": [percentile(c.first_token, 0.95) for c in series],
            "tokens": [c.prompt_tokens + c.completion_tokens for c in series],
            "models": series_models,
        },
    }


@dataclass(frozen=True)
class Share:
    """A backend's part of one model's requests in a window, against the part its
    strategy and weight meant to give it (load-balancing effectiveness)."""

    backend: str
    model: str
    share: float
    intended: float


def backend_shares(
    served: Mapping[tuple[str, str], int], servers: Mapping[str, Server], strategy: str
) -> list[Share]:
    """For each model requested in the window (`served`: requests per (model, backend)),
    every backend that served it or was meant to: one meant to that got nothing shows 0,
    which is the imbalance worth seeing. Models nobody asked for have no share."""
    totals: dict[str, int] = {}
    for (model, _), requests in served.items():
        totals[model] = totals.get(model, 0) + requests
    shares = []
    for model, total in sorted(totals.items()):
        if not total:
            continue
        meant = intended_shares(servers.values(), model, strategy)
        backends = {backend for (m, backend) in served if m == model} | set(meant)
        shares += [
            Share(
                backend,
                model,
                round(served.get((model, backend), 0) / total, 4),
                round(meant.get(backend, 0.0), 4),
            )
            for backend in sorted(backends)
        ]
    return shares


def window_minutes(window: str) -> int:
    """Minutes in a window name, or ValueError naming the ones there are."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    return WINDOWS[window]


def current_minute(now: float) -> int:
    return math.floor(now / 60)
