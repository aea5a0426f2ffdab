"""What a notification says, in the shape its receiver reads (pure).

- `json` (the default): the fields, with `event` and a human line in `text`.
- `slack`: an incoming webhook's payload, `{"text", "blocks"}`.
- `discord`: a webhook's payload, `{"content", "embeds"}`.
- `ntfy`: a POST of plain text to the topic URL, titled, tagged and
  prioritised by the `Title`, `Tags` and `Priority` headers.

Each is one short line a person reads in a chat or on a phone, plus the
fields; never the server's URL or any key (a channel may be wider than the
host).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from healthd.notify import Notification

FORMATS = ("json", "slack", "discord", "ntfy")
# Discord's embed colours: red for trouble, green for healthy, amber otherwise.
COLOURS = {"unhealthy": 0xD93025, "healthy": 0x1E8E3E}
AMBER = 0xF9AB00
TROUBLE = frozenset({"unhealthy", "lease_expired", "deregistered"})


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str
    headers: dict[str, str]


def _who(notification: Notification) -> str:
    short = notification.registration_id[:8]
    return f"{notification.label} ({short})" if notification.label else f"server {short}"


def headline(notification: Notification) -> str:
    """One line for a person: what happened to which server, and why."""
    who, event = _who(notification), notification.event
    models = ", ".join(notification.models[:5]) or "no model yet"
    if event == "lease_expired":
        return f"{who} [{models}] left the pool: its agent stopped answering (lease expired)"
    if event == "drained":
        return f"{who} [{models}] was drained by the admin: no new requests"
    if event == "deregistered":
        return f"{who} [{models}] was deregistered by the admin"
    why = (
        f": {notification.reason}" if notification.reason and notification.new != "healthy" else ""
    )
    return f"{who} [{models}] is {notification.new}{why} (was {notification.old})"


def fields(notification: Notification) -> list[tuple[str, str]]:
    return [
        ("Registration", notification.registration_id),
        ("Models", ", ".join(notification.models) or "none yet"),
        ("Status", f"{notification.old} → {notification.new}"),
        ("Reason", notification.reason or "none"),
        ("At", _at(notification)),
    ]


def _at(notification: Notification) -> str:
    return notification.at.isoformat().replace("+00:00", "Z")


def _trouble(notification: Notification) -> bool:
    return notification.event in TROUBLE or (
        notification.event == "health" and notification.new == "unhealthy"
    )


def _json(notification: Notification) -> dict[str, Any]:
    return {
        "event": notification.event,
        "text": headline(notification),
        "registration_id": notification.registration_id,
        "models": list(notification.models),
        "old": notification.old,
        "new": notification.new,
        "reason": notification.reason,
        "at": _at(notification),
    }


def _slack(notification: Notification) -> dict[str, Any]:
    line = headline(notification)
    return {
        "text": line,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": line}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{value}"}
                    for name, value in fields(notification)
                ],
            },
        ],
    }


def _discord(notification: Notification) -> dict[str, Any]:
    colour = COLOURS.get(notification.new, AMBER) if notification.event == "health" else AMBER
    if _trouble(notification):
        colour = COLOURS["unhealthy"]
    return {
        "content": headline(notification),
        "embeds": [
            {
                "title": f"{notification.event.replace('_', ' ')}: {notification.new}",
                "description": notification.reason or "",
                "color": colour,
                "timestamp": _at(notification),
                "fields": [
                    {"name": name, "value": value, "inline": True}
                    for name, value in fields(notification)
                ],
            }
        ],
    }


def _ntfy(notification: Notification) -> Rendered:
    text = "\n".join([headline(notification), *(f"{k}: {v}" for k, v in fields(notification))])
    trouble = _trouble(notification)
    title = f"Gateway: server {notification.registration_id[:8]} {notification.event}"
    return Rendered(
        text.encode(),
        "text/plain; charset=utf-8",
        {
            # Header values travel as Latin-1: the title is ASCII; the rest is in the body.
            "Title": title.replace("_", " "),
            "Tags": "warning" if trouble else "white_check_mark",
            "Priority": "high" if trouble else "default",
        },
    )


def render(notification: Notification) -> Rendered:
    """The request body and headers a notification is POSTed with, by its format."""
    if notification.format == "ntfy":
        return _ntfy(notification)
    shape = {"slack": _slack, "discord": _discord}.get(notification.format, _json)
    return Rendered(json.dumps(shape(notification)).encode(), "application/json", {})
