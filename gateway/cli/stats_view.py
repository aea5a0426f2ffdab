"""How `gateway-admin stats` prints /admin/stats (use --json in scripts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.accounting.key_windows import CLIENT_FIGURES
from gateway.cli.api_client import format_table

SHORT_ID = 8


def backend_name(row: Mapping[str, Any]) -> str:
    """A backend as a person tells it apart: a short id, the endpoint's host and the
    owner's description (never the URL's path or userinfo, never its key)."""
    name = f"{row['registration_id'][:SHORT_ID]} {row.get('endpoint_host') or '?'}"
    return f"{name} ({row['description']})" if row.get("description") else name


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{round(100 * fraction, 1):g}%"


def share_text(shares: list[Mapping[str, Any]]) -> str:
    """Per model: the share it got / the share it was meant to get."""
    return ", ".join(
        f"{s['model']} {percent(s['share'])}/{percent(s['intended_share'])}" for s in shares
    )


def format_stats(stats: dict[str, Any]) -> str:
    """`gateway-admin stats` for people: a line of totals, then a table per breakdown."""
    totals = stats["totals"]
    lines = [
        f"window {stats['window']}: {totals['requests']} requests, "
        f"{totals['success_rate'] if totals['success_rate'] is not None else '-'} % ok, "
        f"p50 {totals['latency_p50_ms']} ms, p95 {totals['latency_p95_ms']} ms, "
        f"tokens {totals['prompt_tokens']} in / {totals['completion_tokens']} out",
        "",
    ]
    columns = (
        "requests",
        "success_rate",
        "latency_p50_ms",
        "latency_p95_ms",
        "first_token_p50_ms",
        "completion_tokens",
    )
    lines.append(
        format_table(
            ("model", *columns),
            [(model, *(row[c] for c in columns)) for model, row in stats["models"].items()],
        )
    )
    lines.append("")
    lines.append(
        format_table(
            ("backend", "health", "in_flight", *columns, "share/intended"),
            [
                (
                    backend_name(row),
                    row["health"],
                    row["in_flight"],
                    *(row[c] for c in columns),
                    share_text(row["shares"]) or None,
                )
                for row in stats["backends"]
            ],
        )
    )
    lines.append("")
    lines.append(
        format_table(
            ("owner", *columns),
            [(owner, *(row[c] for c in columns)) for owner, row in stats["owners"].items()],
        )
    )
    return "\n".join(lines)


def format_key_stats(stats: dict[str, Any]) -> str:
    """`gateway-admin stats --by key`: the clients' totals, then a row per key (its
    prefix and name, never the key)."""
    totals = stats["clients"]["totals"]
    ok = totals["success_rate"] if totals["success_rate"] is not None else "-"
    lines = [
        f"window {stats['window']}: clients {totals['requests']} requests, {ok} % ok, "
        f"tokens {totals['prompt_tokens']} in / {totals['completion_tokens']} out",
        "",
        format_table(
            ("key", "owner", "group", *CLIENT_FIGURES),
            [
                (
                    f"{row['prefix']}… {row['name']}" + (" (revoked)" if row["revoked"] else ""),
                    row["owner"],
                    row["group"],
                    *(row[c] for c in CLIENT_FIGURES),
                )
                for row in stats["keys"]
            ],
        )
        if stats["keys"]
        else "no key was used in this window",
    ]
    return "\n".join(lines)
