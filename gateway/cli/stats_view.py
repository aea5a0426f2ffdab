"""How `gateway-admin stats`, `keys` and `groups` print for people (use --json in
scripts): keys by their prefixes, never the keys themselves (the one exception is the
answer that created a key)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.accounting.key_windows import CLIENT_FIGURES
from gateway.cli.api_client import format_table
from gateway.cli.server_view import format_pairs, when, words

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


KEY_COLUMNS = (
    "id",
    "prefix",
    "name",
    "owner",
    "group",
    "status",
    "requests_today",
    "tokens_today",
    "last_used",
)


def limits_text(limits: Mapping[str, int]) -> str:
    """`requests_per_minute=30, tokens_per_day=0 (none)`; '-' for no limit of its own."""
    if not limits:
        return "-"
    return ", ".join(
        f"{name}={value}" + (" (none)" if value == 0 and name != "priority" else "")
        for name, value in limits.items()
    )


def keys_table(keys: Sequence[Mapping[str, Any]]) -> str:
    if not keys:
        return "no keys"
    return format_table(
        KEY_COLUMNS,
        [
            (
                k["id"],
                k["prefix"],
                k["name"],
                k["owner"],
                k["group"],
                k["status"],
                k["usage_today"]["requests"],
                k["usage_today"]["prompt_tokens"] + k["usage_today"]["completion_tokens"],
                when(k["last_used_at"]),
            )
            for k in keys
        ],
    )


def key_details(k: Mapping[str, Any]) -> str:
    usage = k["usage_today"]
    return format_pairs(
        [
            ("id", k["id"]),
            ("prefix", k["prefix"] + "…"),
            ("name", k["name"]),
            ("owner", k["owner"]),
            ("group", words(k["group"])),
            ("status", k["status"]),
            ("own limits", limits_text(k["limits"])),
            ("effective limits", limits_text(k["effective_limits"])),
            ("own models", words(k["models"])),
            (
                "allowed models",
                "every model"
                if k["allowed_models"] is None
                else words(k["allowed_models"]) or "none",
            ),
            ("created", when(k["created_at"])),
            ("last used", when(k["last_used_at"])),
            ("expires", when(k["expires_at"])),
            ("revoked", when(k["revoked_at"])),
            (
                "today",
                f"{usage['requests']} requests ({usage['failures']} failed), tokens "
                f"{usage['prompt_tokens']} in / {usage['completion_tokens']} out",
            ),
        ]
    )


def created_text(k: Mapping[str, Any]) -> str:
    """`keys create`: the key itself, this once."""
    return (
        f"issued key {k['id']} ({k['prefix']}…) to {k['owner']}: {k['name']}\n"
        f"key (shown once; it is not stored, keep it safe):\n{k['key']}"
    )


def groups_table(groups: Sequence[Mapping[str, Any]]) -> str:
    if not groups:
        return "no groups"
    return format_table(
        ("group", "keys", "limits", "models"),
        [
            (
                g["name"],
                g["keys"],
                limits_text(g["limits"]),
                words(g["models"]) if g["models"] else "every model",
            )
            for g in groups
        ],
    )


def group_details(g: Mapping[str, Any]) -> str:
    return format_pairs(
        [
            ("group", g["name"]),
            ("keys", f"{g['keys']} (not revoked)"),
            ("limits", limits_text(g["limits"])),
            ("models", words(g["models"]) if g["models"] else "every model"),
            ("created", when(g["created_at"])),
        ]
    )
