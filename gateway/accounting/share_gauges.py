"""The load-balancing gauges of /metrics: each backend's share of its model's
requests over the last minutes, beside the share it was meant to get.

`gateway_backend_share{backend,model}` and
`gateway_backend_intended_share{backend,model}` are computed when /metrics is
scraped, from `usage_minutes` (every worker's counts) and the registry, with
the same arithmetic as /admin/stats (gateway/accounting/windows.py): any worker
answers the same figures, and a backend gone from the pool is gone from the
gauges, with no per-process state to age out. Labels as the other metrics':
`backend` a registration id, `model` a registered model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy.exc import OperationalError

from gateway.accounting.usage_window import read_window
from gateway.accounting.windows import Row, Share, backend_shares, current_minute
from shared.db import Database
from shared.logging import get_logger

SHARE_WINDOW_MINUTES = 5
log = get_logger("api")


def served_by_model(rows: Iterable[Row]) -> dict[tuple[str, str], int]:
    """Requests per (model, backend) in the rows."""
    served: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row.model, row.backend)
        served[key] = served.get(key, 0) + row.counts.requests
    return served


def share_families(shares: Iterable[Share]) -> list[Metric]:
    """The two gauge families of the shares (fractions, 0 to 1)."""
    window = f"over the last {SHARE_WINDOW_MINUTES} minutes, all workers"
    observed = GaugeMetricFamily(
        "gateway_backend_share",
        f"The backend's share of its model's requests, {window}.",
        labels=("backend", "model"),
    )
    intended = GaugeMetricFamily(
        "gateway_backend_intended_share",
        "The share the routing strategy and weights meant the backend to get (best "
        f"priority tier's healthy backends), for each model requested {window}.",
        labels=("backend", "model"),
    )
    for share in shares:
        observed.add_metric((share.backend, share.model), share.share)
        intended.add_metric((share.backend, share.model), share.intended)
    return [observed, intended]


class _Families:
    """A collector of families computed beforehand (prometheus_client's Collector)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def share_exposition(database: Database, strategy: str, now: float) -> bytes:
    """The gauges in Prometheus' text format; nothing when the database cannot be read
    (the rest of /metrics matters most exactly then)."""
    first = current_minute(now) - SHARE_WINDOW_MINUTES + 1
    try:
        rows, servers = read_window(database, first)
    except OperationalError as error:
        log.warning("backend shares left out of /metrics", error=type(error).__name__)
        return b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        _Families(share_families(backend_shares(served_by_model(rows), servers, strategy)))
    )
    return generate_latest(registry)
