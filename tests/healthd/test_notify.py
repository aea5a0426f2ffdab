"""Notifications (#14 item 7): healthd POSTs each health transition to notify_url,
signed with the management token, retried when the receiver fails."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.tokens import new_token, token_hash
from healthd.notify import Notification, retry_delays, signature
from shared.db import Database
from shared.settings import Settings
from shared.upstream import probe_transport
from shared.urls import system_resolver
from tests.conftest import ADMIN_KEY
from tests.healthd.test_daemon import Switchable, add_server, running, until
from tests.support import ThreadedServer


class Receiver:
    """A webhook receiver on 127.0.0.1 that refuses its first delivery with a 500."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.refused = 0
        self.app = Starlette(routes=[Route("/hooks/health", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        if self.refused == 0:
            self.refused += 1
            return Response(status_code=500)
        self.received.append((dict(request.headers), body))
        return Response(status_code=204)


def test_the_signature_and_the_retries() -> None:
    notification = Notification(
        "http://127.0.0.1:1/x", "r1", ("m",), "healthy", "unhealthy", "refused",
        datetime(2026, 11, 23, tzinfo=UTC), "k",
    )  # fmt: skip
    body = notification.body()
    assert json.loads(body) == {
        "event": "health",
        "text": "server r1 [m] is unhealthy: refused (was healthy)",
        "registration_id": "r1",
        "models": ["m"],
        "old": "healthy",
        "new": "unhealthy",
        "reason": "refused",
        "at": "2026-11-23T00:00:00Z",
    }
    assert signature("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert retry_delays() == [1.0, 2.0, 4.0, 8.0]


async def test_transitions_are_posted_signed_and_retried(
    make_settings: Callable[..., Settings], database: Database
) -> None:
    settings = make_settings(health_check_interval_seconds=1, health_check_timeout_seconds=1)
    backend, receiver = Switchable(), Receiver()
    token = new_token()
    with ThreadedServer(backend.app) as server, ThreadedServer(receiver.app) as hooks:
        server_id = add_server(
            database,
            server.url,
            notify_url=f"{hooks.url}/hooks/health?owner=alice",
            management_token_hash=token_hash(token),
        )
        async with running(settings, database):
            await until(lambda: len(receiver.received) == 1, 10, "unknown → healthy, retried")
            backend.up = False
            await until(lambda: len(receiver.received) == 2, 10, "healthy → unhealthy")
    first, second = (json.loads(body) for _, body in receiver.received)
    assert (first["old"], first["new"], first["registration_id"]) == (
        "unknown",
        "healthy",
        server_id,
    )
    assert (second["old"], second["new"]) == ("healthy", "unhealthy")
    assert first["models"] == ["m"] and "503" in second["reason"]
    # The holder of the token checks the signature with the token's SHA-256 as the key.
    key = hashlib.sha256(token.encode()).hexdigest()
    for headers, body in receiver.received:
        expected = "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-gateway-signature"] == expected
        assert token not in body.decode()
    assert receiver.refused == 1


def test_notify_url_through_the_admin_api(gateway: ThreadedServer) -> None:
    with ThreadedServer(Switchable().app) as server:
        body = {"endpoint_url": server.url, "notify_url": "https://hooks.example/x?y=1"}
        response = httpx.post(
            f"{gateway.url}/admin/register", json=body, headers={"X-API-Key": ADMIN_KEY}
        )
        assert response.status_code == 201, response.text
        shown = httpx.get(
            f"{gateway.url}/admin/servers/{response.json()['registration_id']}",
            headers={"X-API-Key": ADMIN_KEY},
        ).json()
        assert shown["notify_url"] == "https://hooks.example/x?y=1"
        bad = httpx.post(
            f"{gateway.url}/admin/register",
            json={"endpoint_url": server.url, "notify_url": "http://u:p@hooks.example/"},
            headers={"X-API-Key": ADMIN_KEY},
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "notify_url"


def test_notifications_are_not_exempt_from_the_guard_as_configured_probes_are(
    make_settings: Callable[..., Settings],
) -> None:
    """UPSTREAM's server is probed without the guard; a webhook naming it is not sent so."""
    settings = make_settings(upstream="http://127.0.0.1:9", allow_private_backends=False)
    probes = probe_transport(settings, system_resolver)
    notifications = probe_transport(settings, system_resolver, exempt_configured=False)
    assert probes.dialer.exempt == {("127.0.0.1", 9)}
    assert notifications.dialer.exempt == frozenset()
