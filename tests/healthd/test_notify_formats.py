"""Notifications where a person looks (#21 item 3): each `notify_format` is received as
that tool's webhook payload; the admin's drain and deregistration, and a lease that
expires, are told too; bad formats and addresses are refused at registration."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.cli.demo_backend import create_demo_app
from healthd.formats import FORMATS, render
from healthd.notify import Notification
from tests.conftest import ADMIN_KEY
from tests.gateway.admin.test_leases import lease
from tests.support import ThreadedServer, process_settings, start_healthd, wait_for

ADMIN = {"X-API-Key": ADMIN_KEY}
NTFY_PRIORITIES = {"min", "low", "default", "high", "max", "1", "2", "3", "4", "5"}


def check_slack(headers: dict[str, str], body: bytes) -> str:
    """Slack's incoming webhook: `text`, and `blocks` of known types (mrkdwn text)."""
    payload = json.loads(body)
    assert set(payload) <= {"text", "blocks"} and isinstance(payload["text"], str)
    for block in payload["blocks"]:
        assert block["type"] == "section"
        texts = [block["text"]] if "text" in block else block["fields"]
        assert len(texts) <= 10 and all(t["type"] == "mrkdwn" and t["text"] for t in texts)
    text: str = payload["text"]
    return text


def check_discord(headers: dict[str, str], body: bytes) -> str:
    """Discord's webhook: `content` (at most 2000 characters) and `embeds` within limits."""
    payload = json.loads(body)
    assert set(payload) <= {"content", "embeds"} and 0 < len(payload["content"]) <= 2000
    assert len(payload["embeds"]) <= 10
    for embed in payload["embeds"]:
        assert len(embed["title"]) <= 256 and isinstance(embed["color"], int)
        datetime.fromisoformat(embed["timestamp"])
        assert len(embed["fields"]) <= 25
        for field in embed["fields"]:
            assert len(field["name"]) <= 256 and 0 < len(field["value"]) <= 1024
            assert isinstance(field["inline"], bool)
    content: str = payload["content"]
    return content


def check_ntfy(headers: dict[str, str], body: bytes) -> str:
    """ntfy's publish: the message as plain text, with Title, Tags and Priority headers."""
    assert headers["content-type"].startswith("text/plain")
    assert headers["title"] and headers["tags"]
    assert headers["priority"] in NTFY_PRIORITIES
    return body.decode().splitlines()[0]


def check_json(headers: dict[str, str], body: bytes) -> str:
    payload = json.loads(body)
    assert {"event", "registration_id", "models", "old", "new", "reason", "at"} <= set(payload)
    text: str = payload["text"]
    return text


CHECKS: dict[str, Callable[[dict[str, str], bytes], str]] = {
    "json": check_json,
    "slack": check_slack,
    "discord": check_discord,
    "ntfy": check_ntfy,
}


@pytest.mark.parametrize("event", ["health", "lease_expired", "drained", "deregistered"])
@pytest.mark.parametrize("shape", FORMATS)
def test_every_format_renders_as_its_tools_payload(shape: str, event: str) -> None:
    notification = Notification(
        "http://127.0.0.1:1/x", "0123456789abcdef", ("llama3",), "healthy", "unhealthy",
        "connection refused", datetime(2026, 12, 4, tzinfo=UTC), "k",
        event=event, format=shape, label="my laptop",
    )  # fmt: skip
    rendered = render(notification)
    headers = {
        "content-type": rendered.content_type,
        **{k.lower(): v for k, v in rendered.headers.items()},
    }
    line = CHECKS[shape](headers, rendered.body)
    assert "my laptop" in line and "llama3" in line
    if event == "health":
        assert "unhealthy: connection refused" in line


class Hooks:
    """A webhook receiver on 127.0.0.1: what arrived at each path."""

    def __init__(self) -> None:
        self.received: dict[str, list[tuple[dict[str, str], bytes]]] = {}
        self.app = Starlette(routes=[Route("/hooks/{name}", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.received.setdefault(name, []).append((dict(request.headers), await request.body()))
        return Response(status_code=204)


@pytest.fixture
def healthd(tmp_path: Path, database_url: str) -> Iterator[None]:
    process = start_healthd(tmp_path, process_settings(tmp_path, database_url))
    yield
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def register(gateway: ThreadedServer, **body: Any) -> str:
    answer = httpx.post(f"{gateway.url}/admin/register", json=body, headers=ADMIN, timeout=15)
    assert answer.status_code == 201, answer.text
    registration_id: str = answer.json()["registration_id"]
    return registration_id


def test_each_format_is_received_when_the_admin_drains_and_deregisters(
    start_gateway: Callable[..., ThreadedServer], healthd: None
) -> None:
    gateway = start_gateway()
    hooks = Hooks()
    with ExitStack() as stack:
        receiver = stack.enter_context(ThreadedServer(hooks.app))
        ids = {}
        for shape in FORMATS:
            backend = stack.enter_context(ThreadedServer(create_demo_app("llama3")))
            ids[shape] = register(
                gateway, endpoint_url=backend.url, notify_url=f"{receiver.url}/hooks/{shape}",
                notify_format=shape, metadata={"description": f"{shape} box"},
            )  # fmt: skip
        for server_id in ids.values():
            drained = httpx.post(f"{gateway.url}/admin/servers/{server_id}/drain", headers=ADMIN)
            assert drained.status_code == 200
            deleted = httpx.delete(f"{gateway.url}/admin/register/{server_id}", headers=ADMIN)
            assert deleted.status_code == 200
        wait_for(
            lambda: all(len(hooks.received.get(shape, [])) == 2 for shape in FORMATS),
            timeout=15,
            what="two notifications in every format",
        )
    for shape in FORMATS:
        drained, deregistered = (CHECKS[shape](*item) for item in hooks.received[shape])
        assert f"{shape} box" in drained and "drained by the admin" in drained
        assert "deregistered by the admin" in deregistered


def test_a_lease_that_expires_notifies(
    start_gateway: Callable[..., ThreadedServer], healthd: None
) -> None:
    gateway = start_gateway(lease_heartbeat_seconds=0.2, lease_grace_seconds=0)
    hooks = Hooks()
    with (
        ThreadedServer(hooks.app) as receiver,
        ThreadedServer(create_demo_app("laptop")) as backend,
    ):
        body = {"endpoint_url": backend.url, "notify_url": f"{receiver.url}/hooks/lease",
                "notify_format": "ntfy"}  # fmt: skip
        with lease(gateway, body, ADMIN) as (response, stream):
            assert response.status_code == 200
            kind, first = next(stream)
            assert kind == "registered"
        # The agent is gone: the grace (0) runs out, healthd deactivates it and says so.
        wait_for(lambda: hooks.received.get("lease"), timeout=15, what="the lease's notification")
    [(headers, message)] = hooks.received["lease"]
    assert "lease expired" in check_ntfy(headers, message)
    assert first["registration_id"][:8] in headers["title"]


def test_bad_formats_and_addresses_are_refused_at_registration(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    gateway = start_gateway(allow_private_backends=False)
    answer = httpx.post(
        f"{gateway.url}/admin/register",
        json={"endpoint_url": "https://model.example", "notify_format": "teams"},
        headers=ADMIN,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "notify_format"
    assert all(shape in answer.json()["error"]["message"] for shape in FORMATS)
    local = httpx.post(
        f"{gateway.url}/admin/register",
        json={"endpoint_url": "https://model.example", "notify_url": "http://127.0.0.1:9/x"},
        headers=ADMIN,
    )
    assert local.status_code == 400 and local.json()["error"]["param"] == "notify_url"
