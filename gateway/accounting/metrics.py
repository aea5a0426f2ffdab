"""What the gateway counts for Prometheus (served by gateway/prometheus.py).

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
    "Time a request waited for a backend to become available (QUEUE_TIMEOUT_SECONDS).",
    buckets=LATENCY_BUCKETS,
)
SNAPSHOT_AGE = Gauge(
    "gateway_registry_snapshot_age_seconds",
    "Since the routing snapshot was last found to match the database (the worst worker).",
    multiprocess_mode="livemax",
)


def record_health(snapshot_backends: dict[tuple[str, str], bool]) -> None:
    """Each (backend, model)'s health in a new routing snapshot; those gone read 0."""
    for (backend, model), healthy in snapshot_backends.items():
        HEALTHY.labels(backend, model).set(1 if healthy else 0)
    for labels in _shown_health - snapshot_backends.keys():
        HEALTHY.labels(*labels).set(0)
    _shown_health.clear()
    _shown_health.update(snapshot_backends)


_shown_health: set[tuple[str, str]] = set()
