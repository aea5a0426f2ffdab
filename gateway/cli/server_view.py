"""How `gateway-admin servers`, `show` and `update` print registrations for people:
aligned columns and words, never Python's reprs (`--json` is for scripts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.cli.api_client import format_table

SERVER_COLUMNS = ("registration_id", "models", "status", "active", "priority", "weight",
                  "tags", "source", "in_flight", "endpoint_url", "owner")  # fmt: skip
CHECK_COLUMNS = ("checked_at", "status", "response_ms", "error")


def words(value: Any) -> str:
    """A JSON value as a person reads it: lists joined, yes/no, "-" for nothing."""
    if value is None or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(words(item) for item in value)
    return str(value)


def when(iso: str | None) -> str:
    """An API timestamp to the second, in UTC."""
    if not iso:
        return "-"
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def served(server: Mapping[str, Any]) -> str:
    """A registration's model, or the models its backend lists."""
    if server["model_name"] is not None:
        return str(server["model_name"])
    return "*: " + (", ".join(server["served_models"]) or "(none listed yet)")


def status_of(server: Mapping[str, Any]) -> str:
    """Its state in a word or two: a deregistered one is never called healthy."""
    if not server["is_active"]:
        return "deregistered"
    return str(server["health_status"]) + (",draining" if server["draining"] else "")


def servers_table(servers: Sequence[Mapping[str, Any]], in_flight: Mapping[str, int]) -> str:
    """`gateway-admin servers`: one row per registration."""
    if not servers:
        return "no servers registered"
    return format_table(
        SERVER_COLUMNS,
        [
            (
                s["registration_id"],
                served(s),
                status_of(s),
                words(s["is_active"]),
                s["priority"],
                s["weight"],
                words(s["tags"]),
                s["source"],
                in_flight.get(s["registration_id"], 0),
                s["endpoint_url"],
                words(s["metadata"].get("student_id")),
            )
            for s in servers
        ],
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value} %"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{round(value, 1)} ms"


def _lease(s: Mapping[str, Any]) -> str:
    if s.get("lease_connected_at"):
        return (
            f"held since {when(s['lease_connected_at'])}, heartbeat {when(s['lease_heartbeat_at'])}"
        )
    if s.get("lease_expires_at"):
        return f"ended; deactivated at {when(s['lease_expires_at'])} unless renewed"
    return "none"


def server_fields(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What `show` and `update` print of a registration, in the order a person asks."""
    caps, owner, usage = s["capabilities"], s["metadata"], s["usage"]
    deregistered = f" (deregistered {when(s['deregistered_at'])})" if not s["is_active"] else ""
    return [
        ("registration id", s["registration_id"]),
        ("serves", served(s) + (f" (as {s['backend_model']})" if s["backend_model"] else "")),
        ("endpoint", s["endpoint_url"]),
        ("status", f"{status_of(s)} since {when(s['status_changed_at'])}"),
        ("active", words(s["is_active"]) + deregistered),
        ("source", s["source"]),
        ("owner", words(owner.get("student_id"))),
        ("description", words(owner.get("description"))),
        ("tags", words(s["tags"])),
        ("priority / weight", f"{s['priority']} / {s['weight']}"),
        ("max concurrent", words(s["max_concurrent"])),
        ("capabilities", f"max tokens {words(caps['max_tokens'])}, context "
                         f"{words(caps['context_length'])}, streaming {words(caps['streaming'])}"),
        ("backend key", "set (hidden)" if s["api_key_set"] else "none"),
        ("notify url", words(s["notify_url"])),
        ("notify format", words(s.get("notify_format"))),
        ("lease", _lease(s)),
        ("last check", f"{when(s['last_checked_at'])}, {_ms(s['last_response_time_ms'])}"),
        ("last error", words(s["last_error"])),
        ("consecutive failures", str(s["consecutive_failures"])),
        ("reported models", words(s["reported_models"])),
        ("success rate", f"{_percent(s['success_rate'])} of the last 100 checks, "
                         f"mean {_ms(s['avg_response_time_ms'])}"),
        ("uptime (24 h)", _percent(s["uptime_percent"])),
        ("requests", f"{usage['requests']} ({usage['failures']} failed), tokens "
                     f"{usage['prompt_tokens']} in / {usage['completion_tokens']} out, "
                     f"mean {_ms(usage['mean_latency_ms'])}"),
        ("registered", when(s["registered_at"])),
        ("updated", when(s["updated_at"])),
    ]  # fmt: skip


def format_pairs(pairs: Iterable[tuple[str, str]]) -> str:
    """Labels in one aligned column, values in the next."""
    pairs = list(pairs)
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in pairs)


def server_details(server: Mapping[str, Any]) -> str:
    """`gateway-admin show` (with the recent checks) and `update`."""
    text = format_pairs(server_fields(server))
    checks = server.get("recent_checks")
    if not checks:
        return text
    table = format_table(
        CHECK_COLUMNS,
        [
            (when(c["checked_at"]), c["status"], _ms(c["response_time_ms"]), c["error_message"])
            for c in checks
        ],
    )
    return f"{text}\n\nrecent health checks, newest first:\n{table}"
