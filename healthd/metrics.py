"""healthd's probe results for Prometheus, on HEALTHD_METRICS_PORT (off by default).

healthd is one process, so its metrics live in its memory; the port listens
on 127.0.0.1 only (put a scraper beside it, or a reverse proxy in front).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

PROBES = Counter("healthd_probes_total", "Backend probes, by result.", ("result",))
PROBE_DURATION = Histogram(
    "healthd_probe_duration_seconds",
    "How long a probe took, success or not.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def record_probe(healthy: bool, seconds: float) -> None:
    PROBES.labels("success" if healthy else "failure").inc()
    PROBE_DURATION.observe(seconds)


def serve(port: int) -> None:
    """Serve /metrics on 127.0.0.1:`port` from a thread of its own."""
    start_http_server(port, addr="127.0.0.1")
