"""What the gateway counts for Prometheus (served by gateway/prometheus.py).

The request path does not touch prometheus_client: in its multiprocess mode a
labelled update takes a lock and writes a memory-mapped file, and a request
would make six of them (the README's Performance section has what that cost).
Requests add to plain dicts in a `Recorder`,
and `flush()` (every second, and before /metrics answers) hands the sums over
in one update per label set: a histogram's buckets through the `_buckets` and
`_sum` values prometheus_client keeps for each child (its multiprocess layout
since 2015; tests/gateway/accounting/test_metrics.py reads the result back).

With several workers each process writes its own values to memory-mapped
files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode;
`gateway.main` makes a fresh folder before the workers start), and whichever
worker answers `/metrics` adds them up. Label values stay bounded: `backend`
is a registration id, `model` a registered model, `endpoint` one of the
forwarded API paths, `code` an HTTP status.

Everything is recorded where an attempt is settled (gateway/accounting/attempt.py),
so each request is counted once whatever its outcome.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
GAP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter(
    "gateway_requests_total",
    "Requests answered by a backend, by status code (attempts that failed over included).",
    ("model", "backend", "endpoint", "code"),
)
DURATION = Histogram(
    "gateway_request_duration_seconds",
    "From the client's request to the end of the backend's answer.",
    ("model", "backend"),
    buckets=LATENCY_BUCKETS,
)
FIRST_TOKEN = Histogram(
    "gateway_time_to_first_token_seconds",
    "From the client's request to a stream's first event.",
    ("model", "backend"),
    buckets=LATENCY_BUCKETS,
)
INTER_TOKEN = Histogram(
    "gateway_inter_token_seconds",
    "Gaps between a stream's events, as relayed.",
    ("model",),
    buckets=GAP_BUCKETS,
)
TOKENS = Counter(
    "gateway_tokens_total",
    "Tokens the backends reported, by kind (prompt or completion).",
    ("model", "backend", "kind"),
)
IN_FLIGHT = Gauge(
    "gateway_backend_in_flight",
    "Requests on their way to or from the backend now.",
    ("backend",),
    multiprocess_mode="livesum",
)
HEALTHY = Gauge(
    "gateway_backend_healthy",
    "1 while the backend is healthy for the model, in the routing snapshot.",
    ("backend", "model"),
    multiprocess_mode="livemax",
)
RETRIES = Counter(
    "gateway_retries_total", "Requests tried on another backend after a failure.", ("model",)
)
EJECTIONS = Counter(
    "gateway_ejections_total", "Backends ejected by outlier detection.", ("backend",)
)
QUEUE_WAIT = Histogram(
    "gateway_queue_wait_seconds",
    "Time a request waited for a slot when the model's backends were full "
    "(QUEUE_TIMEOUT_SECONDS) or for one to recover (RECOVERY_WAIT_SECONDS).",
    ("model",),
    buckets=LATENCY_BUCKETS,
)
# Per client group, never per key: a label set bounded by the groups an admin makes.
CLIENT_REQUESTS = Counter(
    "gateway_client_requests_total",
    "Requests of keyed clients, by their group ('' for none) and outcome (ok or failed).",
    ("group", "outcome"),
)
CLIENT_TOKENS = Counter(
    "gateway_client_tokens_total",
    "Tokens used by keyed clients, by their group and kind (prompt or completion).",
    ("group", "kind"),
)
CLIENT_LIMITED = Counter(
    "gateway_client_limited_total",
    "Requests refused by a client limit (429), by group and limit.",
    ("group", "limit"),
)
QUEUED = Gauge(
    "gateway_queue_length",
    "Requests waiting in the fair queue for a slot (every backend of the model full).",
    ("model",),
    multiprocess_mode="livesum",
)
SNAPSHOT_AGE = Gauge(
    "gateway_registry_snapshot_age_seconds",
    "Since the routing snapshot was last found to match the database (the worst worker).",
    multiprocess_mode="livemax",
)
HEALTHD_AGE = Gauge(
    "gateway_healthd_heartbeat_age_seconds",
    "Since healthd last wrote its heartbeat (+Inf: never seen; the worst worker).",
    multiprocess_mode="livemax",
)


HEALTHD_INSTANCES = Gauge(
    "gateway_healthd_instances",
    "healthd processes whose heartbeat is recent (3 x HEALTH_CHECK_INTERVAL_SECONDS), by "
    "role: active (probes) or standby (takes over if the active one dies).",
    ["role"],
    multiprocess_mode="livemax",
)


def record_healthd_instances(roles: dict[str, int]) -> None:
    for role, count in roles.items():
        HEALTHD_INSTANCES.labels(role).set(count)


def record_ages(snapshot_seconds: float, healthd_seconds: float | None) -> None:
    """The registry watcher's round: its snapshot's age, healthd's heartbeat's."""
    SNAPSHOT_AGE.set(snapshot_seconds)
    HEALTHD_AGE.set(float("inf") if healthd_seconds is None else healthd_seconds)


def record_health(snapshot_backends: dict[tuple[str, str], bool]) -> None:
    """Each (backend, model)'s health in a new routing snapshot; those gone read 0."""
    for (backend, model), healthy in snapshot_backends.items():
        HEALTHY.labels(backend, model).set(1 if healthy else 0)
    for labels in _shown_health - snapshot_backends.keys():
        HEALTHY.labels(*labels).set(0)
    _shown_health.clear()
    _shown_health.update(snapshot_backends)


_shown_health: set[tuple[str, str]] = set()


K = TypeVar("K")


def _bucket_index(bounds: tuple[float, ...], value: float) -> int:
    return bisect.bisect_left(bounds, value)


@dataclass
class Distribution:
    """Observations of one histogram child, waiting to be handed over."""

    counts: list[int]
    total: float = 0.0

    def add(self, index: int, value: float) -> None:
        self.counts[index] += 1
        self.total += value


def _hand_over(child: Histogram, pending: Distribution) -> None:
    for index, count in enumerate(pending.counts):
        if count:
            child._buckets[index].inc(count)
    child._sum.inc(pending.total)


@dataclass
class Recorder:
    """A worker's metrics between two flushes, in plain dicts."""

    requests: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    tokens: dict[tuple[str, str, str], int] = field(default_factory=dict)
    durations: dict[tuple[str, str], Distribution] = field(default_factory=dict)
    first_tokens: dict[tuple[str, str], Distribution] = field(default_factory=dict)
    gaps: dict[str, Distribution] = field(default_factory=dict)
    clients: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, outcome)
    client_tokens: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, kind)

    def client(self, group: str, ok: bool, usage: tuple[int, int] | None) -> None:
        key = (group, "ok" if ok else "failed")
        self.clients[key] = self.clients.get(key, 0) + 1
        if usage is not None:
            for kind, count in (("prompt", usage[0]), ("completion", usage[1])):
                self.client_tokens[group, kind] = self.client_tokens.get((group, kind), 0) + count

    def request(
        self,
        model: str,
        backend: str,
        endpoint: str,
        code: int,
        seconds: float,
        usage: tuple[int, int] | None,
    ) -> None:
        key = (model, backend, endpoint, str(code))
        self.requests[key] = self.requests.get(key, 0) + 1
        _observe(self.durations, (model, backend), LATENCY_BUCKETS, seconds)
        if usage is not None:
            for kind, count in (("prompt", usage[0]), ("completion", usage[1])):
                tokens_key = (model, backend, kind)
                self.tokens[tokens_key] = self.tokens.get(tokens_key, 0) + count

    def first_token(self, model: str, backend: str, seconds: float) -> None:
        _observe(self.first_tokens, (model, backend), LATENCY_BUCKETS, seconds)

    def gap(self, model: str, seconds: float) -> None:
        _observe(self.gaps, model, GAP_BUCKETS, seconds)

    def flush(self, in_flight: Mapping[str, int] | None = None) -> None:
        """Hand everything over to prometheus_client: one update per label set."""
        requests, self.requests = self.requests, {}
        tokens, self.tokens = self.tokens, {}
        durations, self.durations = self.durations, {}
        first_tokens, self.first_tokens = self.first_tokens, {}
        gaps, self.gaps = self.gaps, {}
        clients, self.clients = self.clients, {}
        client_tokens, self.client_tokens = self.client_tokens, {}
        for pair, count in clients.items():
            CLIENT_REQUESTS.labels(*pair).inc(count)
        for pair, count in client_tokens.items():
            CLIENT_TOKENS.labels(*pair).inc(count)
        for labels, count in requests.items():
            REQUESTS.labels(*labels).inc(count)
        for token_labels, count in tokens.items():
            TOKENS.labels(*token_labels).inc(count)
        for pair, pending in durations.items():
            _hand_over(DURATION.labels(*pair), pending)
        for pair, pending in first_tokens.items():
            _hand_over(FIRST_TOKEN.labels(*pair), pending)
        for model, pending in gaps.items():
            _hand_over(INTER_TOKEN.labels(model), pending)
        for backend, flying in (in_flight or {}).items():
            IN_FLIGHT.labels(backend).set(flying)


def _observe(
    pending: dict[K, Distribution], key: K, bounds: tuple[float, ...], value: float
) -> None:
    found = pending.get(key)
    if found is None:
        found = pending[key] = Distribution([0] * (len(bounds) + 1))
    found.add(_bucket_index(bounds, value), value)


RECORDER = Recorder()
FLUSH_SECONDS = 1.0


def flush(in_flight: Callable[[], Mapping[str, int]] | None = None) -> None:
    RECORDER.flush(in_flight() if in_flight is not None else None)
