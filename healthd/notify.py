"""Notifications: healthd tells a registration's `notify_url` of every health transition.

The body is the registration's `notify_format` (healthd/formats.py): JSON
`{event, text, registration_id, models, old, new, reason, at}` by default; the header
`X-Gateway-Signature: sha256=<hex>` is an HMAC-SHA256 of the body keyed by the
SHA-256 (hex) of the registration's management token: the gateway keeps only
that hash, and the token's holder computes the same key from the token they
were given. A delivery that fails (no connection, a 5xx, a timeout) is retried
with backoff; a 4xx is the receiver's final word. Deliveries go through the
probe's Transport, so the URL passes the same address guard as a backend's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from healthd.formats import Rendered, render
from shared.logging import get_logger
from shared.upstream import Transport, UpstreamError, UpstreamRequest

ATTEMPTS = 5
FIRST_DELAY = 1.0  # seconds; doubled after each failed attempt
TIMEOUT = 10.0
SIGNATURE_HEADER = "X-Gateway-Signature"

log = get_logger("health_checker")


@dataclass(frozen=True)
class Notification:
    url: str
    registration_id: str
    models: tuple[str, ...]
    old: str
    new: str
    reason: str | None
    at: datetime
    key: str | None  # the management token's SHA-256 (hex): the signing key
    event: str = "health"  # health, lease_expired, drained, deregistered
    format: str = "json"  # json, slack, discord, ntfy (healthd/formats.py)
    label: str | None = None  # the host's description of its server

    def rendered(self) -> Rendered:
        return render(self)

    def body(self) -> bytes:
        return self.rendered().body


def signature(key: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def retry_delays(attempts: int = ATTEMPTS, first: float = FIRST_DELAY) -> list[float]:
    """The pauses between attempts: 1, 2, 4, 8 s."""
    return [first * 2**n for n in range(attempts - 1)]


async def deliver(transport: Transport, notification: Notification) -> bool:
    """POST it until the receiver takes it (2xx) or says no (4xx), or attempts run out."""
    rendered = notification.rendered()
    body = rendered.body
    headers = {
        "Content-Type": rendered.content_type,
        "User-Agent": "multiverse-gateway",
        **rendered.headers,
    }
    if notification.key:
        headers[SIGNATURE_HEADER] = signature(notification.key, body)
    loop = asyncio.get_running_loop()
    parts = urlsplit(notification.url)
    origin = f"{parts.scheme}://{parts.netloc}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    for pause in [*retry_delays(), None]:
        request = UpstreamRequest(origin, target, headers, body, method="POST")
        try:
            async with transport.stream(request, loop.time() + TIMEOUT) as response:
                status = response.status
            if status < 500:
                if status >= 400:
                    log.warning(
                        "notification refused",
                        registration_id=notification.registration_id,
                        status=status,
                    )
                return status < 300
            problem = f"HTTP {status}"
        except UpstreamError as error:
            problem = error.reason
        if pause is None:
            break
        await asyncio.sleep(pause)
    log.warning(
        "notification not delivered",
        registration_id=notification.registration_id,
        reason=problem,
        attempts=ATTEMPTS,
    )
    return False
