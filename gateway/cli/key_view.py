"""How `gateway-admin keys` and `groups` print keys and groups for people: prefixes,
never keys (the one exception is the answer that created a key)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.cli.api_client import format_table
from gateway.cli.server_view import format_pairs, when, words

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
