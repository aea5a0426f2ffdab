"""Client keys' statistics over a window: pure functions over `key_usage_minutes` rows.

The per-person side of windows.py: the request path adds what each key was served
(requests, failures, tokens, latency in windows.py's buckets) per minute and model;
these add them up per key, and for all the keys shown (the `clients` of
/admin/stats), with a series per minute for the charts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from gateway.accounting.windows import Counts, percentile


@dataclass(frozen=True)
class KeyRow:
    """One `key_usage_minutes` row."""

    minute: int
    key_id: str
    model: str
    counts: Counts


@dataclass(frozen=True)
class KeyInfo:
    """What the statistics show of a client key: its prefix, never the key."""

    id: str
    name: str
    owner: str
    group: str | None
    prefix: str
    revoked: bool = False


CLIENT_FIGURES = (
    "requests",
    "failures",
    "success_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "prompt_tokens",
    "completion_tokens",
)


def _client_figures(counts: Counts) -> dict[str, float | int | None]:
    summary = counts.summary()
    return {name: summary[name] for name in CLIENT_FIGURES}


def summarize_keys(
    rows: Iterable[KeyRow],
    keys: Mapping[str, KeyInfo],
    *,
    first_minute: int,
    minutes: int,
    counted: Callable[[str], bool] = lambda _: True,
    always: Iterable[str] = (),
    series_per_key: bool = False,
) -> dict[str, object]:
    """The clients' figures over the keys `counted` says: totals and a series per
    minute, and a row per key used in the window (and per key of `always`, used or
    not), busiest first; with `series_per_key`, each row has its own series."""
    total = Counts()
    by_key: dict[str, Counts] = {key_id: Counts() for key_id in always}
    series = [Counts() for _ in range(minutes)]
    key_series: dict[str, list[Counts]] = {}
    series_models: dict[str, list[int]] = {}
    for row in rows:
        offset = row.minute - first_minute
        if not 0 <= offset < minutes or not counted(row.key_id):
            continue
        total.add(row.counts)
        by_key.setdefault(row.key_id, Counts()).add(row.counts)
        series[offset].add(row.counts)
        series_models.setdefault(row.model, [0] * minutes)[offset] += row.counts.requests
        if series_per_key:
            own = key_series.setdefault(row.key_id, [Counts() for _ in range(minutes)])
            own[offset].add(row.counts)
    table = []
    for key_id, counts in by_key.items():
        info = keys.get(key_id) or KeyInfo(key_id, "?", "?", None, "?")
        item: dict[str, object] = {
            "id": key_id,
            "name": info.name,
            "owner": info.owner,
            "group": info.group,
            "prefix": info.prefix,
            "revoked": info.revoked,
            **_client_figures(counts),
        }
        if series_per_key:
            own = key_series.get(key_id) or [Counts() for _ in range(minutes)]
            item["series"] = {
                "requests": [c.requests for c in own],
                "tokens": [c.prompt_tokens + c.completion_tokens for c in own],
            }
        table.append((-counts.requests, info.owner, info.name, item))
    table.sort(key=lambda entry: entry[:3])
    return {
        "clients": {
            "totals": _client_figures(total),
            "series": {
                "minutes": [(first_minute + i) * 60 for i in range(minutes)],
                "requests": [c.requests for c in series],
                "error_rate": [
                    round(100 * c.failures / c.requests, 2) if c.requests else None for c in series
                ],
                "latency_p50_ms": [percentile(c.latency, 0.5) for c in series],
                "latency_p95_ms": [percentile(c.latency, 0.95) for c in series],
                "tokens": [c.prompt_tokens + c.completion_tokens for c in series],
                "models": series_models,
            },
        },
        "keys": [item for *_, item in table],
    }
