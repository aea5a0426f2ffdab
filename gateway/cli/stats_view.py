"""How `gateway-admin stats` prints /admin/stats (use --json in scripts)."""

from __future__ import annotations

from typing import Any

from gateway.cli.api_client import format_table


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
    columns = ("requests", "success_rate", "latency_p50_ms", "latency_p95_ms",
               "first_token_p50_ms", "completion_tokens")  # fmt: skip
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
                    row["registration_id"],
                    row["health"],
                    row["in_flight"],
                    *(row[c] for c in columns),
                    " ".join(
                        f"{s['model']}:{s['share']}/{s['intended_share']}" for s in row["shares"]
                    ),
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
