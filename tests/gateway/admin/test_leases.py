"""Leases in-process (#19 items 5, 14 and 23): re-attach applies the body and probes
first, a deregistration is final, a made-up token takes no write lock, registering
and leasing are one transaction, and a lease's end does not block the event loop."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from gateway.admin.leases import reattached_target
from gateway.admin.registrations import Target
from gateway.admin.schemas import RegisterRequest
from gateway.admin.tokens import Revoker, revoked_hash, stored_forms, token_hash
from gateway.cli.demo_backend import create_demo_app
from healthd.store import expire_leases
from shared.db import Database
from shared.models import ModelServer, utcnow
from tests.conftest import ADMIN_KEY
from tests.databases import write_lock_held as held
from tests.support import ThreadedServer, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}
TOKEN = "mgt_" + "x" * 43


@pytest.mark.parametrize("by", list(Revoker))
def test_a_revoked_hash_matches_no_token_yet_names_who_revoked(by: Revoker) -> None:
    live = token_hash(TOKEN)
    revoked = revoked_hash(live, by)
    assert revoked != live and len(revoked) == len(live)
    assert not set(revoked) <= set("0123456789abcdef")  # no SHA-256 hex digest is it
    assert stored_forms(TOKEN) == {live: None, **{revoked_hash(live, r): r for r in Revoker}}
    assert stored_forms(TOKEN)[revoked] is by


CURRENT = Target("http://old.example.invalid", "old-key", "llama", "llama-3")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"endpoint_url": "http://a.example.invalid"}, ("old-key", "llama", "llama-3")),
        (
            {"endpoint_url": "http://a.example.invalid", "api_key": "new"},
            ("new", "llama", "llama-3"),
        ),
        (
            {"endpoint_url": "http://a.example.invalid", "model_name": "qwen"},
            ("old-key", "qwen", "llama-3"),
        ),
        ({"endpoint_url": "http://a.example.invalid", "model_name": None}, ("old-key", None, None)),
        (
            {"endpoint_url": "http://a.example.invalid", "model_name": "q", "backend_model": "b"},
            ("old-key", "q", "b"),
        ),
    ],
)
def test_what_a_reattach_probes(body: dict[str, Any], expected: tuple[str | None, ...]) -> None:
    payload = RegisterRequest.model_validate(body)
    key = payload.api_key.get_secret_value() if payload.api_key else None
    target = reattached_target(payload, CURRENT, key)
    assert target.endpoint_url == "http://a.example.invalid"
    assert (target.api_key, target.model_name, target.backend_model) == expected


@contextmanager
def lease(
    gateway: ThreadedServer, body: dict[str, Any], headers: dict[str, str]
) -> Iterator[tuple[httpx.Response, Iterator[tuple[str, dict[str, Any]]]]]:
    """An open lease stream and its events (the stream closes when the block ends)."""
    with (
        httpx.Client(timeout=httpx.Timeout(15, read=None)) as client,
        client.stream(
            "POST", f"{gateway.url}/admin/leases", json=body, headers=headers
        ) as response,
    ):
        yield response, events(response)


def events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    kind = ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            yield kind, json.loads(line[5:])


def server(gateway: ThreadedServer, registration_id: str) -> dict[str, Any]:
    found = httpx.get(f"{gateway.url}/admin/servers/{registration_id}", headers=HEADERS).json()
    assert isinstance(found, dict)
    return found


def join_new(gateway: ThreadedServer, backend: ThreadedServer, **body: Any) -> tuple[str, str]:
    """A first lease with the admin key, closed at once: (registration id, token)."""
    with lease(gateway, {"endpoint_url": backend.url, **body}, HEADERS) as (response, stream):
        assert response.status_code == 200
        kind, first = next(stream)
        assert kind == "registered"
        return first["registration_id"], first["management_token"]


def expire(database: Database) -> None:
    """What healthd does when a lease runs out (its own code)."""
    wait_for(
        lambda: expire_leases(database, utcnow() + timedelta(hours=1)),
        what="the lease to be expired",
    )


def test_a_reattach_applies_its_body_and_probes_before_routing(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    gateway = start_gateway(lease_heartbeat_seconds=0.2, lease_grace_seconds=0)
    with ThreadedServer(create_demo_app("laptop")) as backend:
        registration_id, token = join_new(gateway, backend, tags=["cpu"])
        expire(database)
        body = {"endpoint_url": backend.url, "tags": ["gpu"], "api_key": "backend-key-2"}
        with lease(gateway, body, {"X-Management-Token": token}) as (response, stream):
            assert response.status_code == 200
            assert next(stream)[1]["registration_id"] == registration_id
            again = server(gateway, registration_id)
            assert again["is_active"] and again["tags"] == ["gpu"] and again["api_key_set"]
        expire(database)
    # The server is gone: the re-attach is refused, and the registration stays out.
    with lease(gateway, {"endpoint_url": backend.url}, {"X-Management-Token": token}) as (
        response,
        _,
    ):
        assert response.status_code == 503
        assert "failed its health check" in response.read().decode()
    assert not server(gateway, registration_id)["is_active"]


def test_a_reattach_passes_notify_url_through_the_guard(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    """As registering and PUT do: a token holder cannot store a forbidden webhook."""
    gateway = start_gateway(lease_heartbeat_seconds=0.2, lease_grace_seconds=0)
    # A second gateway on the same database, with the guard on (the first lets the test's
    # loopback backend in): the webhook is checked before anything else is.
    guarded = start_gateway(allow_private_backends=False)
    with ThreadedServer(create_demo_app("laptop")) as backend:
        registration_id, token = join_new(gateway, backend)
        expire(database)
        body = {"endpoint_url": backend.url, "notify_url": "http://169.254.169.254/latest/x"}
        with lease(guarded, body, {"X-Management-Token": token}) as (response, _):
            assert response.status_code == 400
            response.read()
            assert response.json()["error"]["param"] == "notify_url"
        assert server(gateway, registration_id)["notify_url"] is None


@pytest.mark.parametrize(("by", "who"), [("admin", "the admin"), ("owner", "its owner")])
def test_a_deregistration_is_final(
    start_gateway: Callable[..., ThreadedServer], by: str, who: str
) -> None:
    gateway = start_gateway(lease_heartbeat_seconds=0.2)
    with ThreadedServer(create_demo_app("laptop")) as backend:
        registration_id, token = join_new(gateway, backend)
        deleting = HEADERS if by == "admin" else {"X-Management-Token": token}
        deleted = httpx.delete(f"{gateway.url}/admin/register/{registration_id}", headers=deleting)
        assert deleted.status_code == 200, deleted.text
        body = {"endpoint_url": backend.url}
        with lease(gateway, body, {"X-Management-Token": token}) as (response, _):
            assert response.status_code == 403  # before reading: a stream never ends
            response.read()
            error = response.json()["error"]
            assert (
                error["type"] == "permission_error" and f"deregistered by {who}" in error["message"]
            )
            assert token not in response.text
        assert not server(gateway, registration_id)["is_active"]


def write_lock_held(database: Database) -> AbstractContextManager[None]:
    """Another connection holds the write lock (as a backup or a long write would), on
    either engine."""
    return held(database.engine.url.render_as_string(hide_password=False))


def test_a_made_up_token_is_refused_before_the_write_lock(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    gateway = start_gateway()
    with write_lock_held(database):
        started = time.monotonic()
        refused = httpx.post(
            f"{gateway.url}/admin/leases",
            json={"endpoint_url": "http://127.0.0.1:9"},
            headers={"X-Management-Token": TOKEN},
            timeout=15,
        )
        took = time.monotonic() - started
    assert refused.status_code == 403, refused.text
    assert took < 2, f"waited {took:.1f}s for the write lock"


def test_registering_and_leasing_are_one_transaction(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    gateway = start_gateway()
    writes: list[str] = []

    def on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("sqlite_begin") == "IMMEDIATE":
            writes.append(threading.current_thread().name)

    with ThreadedServer(create_demo_app("laptop")) as backend:
        event.listen(database.engine, "begin", on_begin)
        try:
            with lease(gateway, {"endpoint_url": backend.url}, HEADERS) as (_response, stream):
                assert next(stream)[0] == "registered"
                assert len(writes) == 1, writes
        finally:
            event.remove(database.engine, "begin", on_begin)


def test_a_lease_ending_does_not_block_the_event_loop(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    gateway = start_gateway(lease_heartbeat_seconds=30)
    with ThreadedServer(create_demo_app("laptop")) as backend:
        with lease(gateway, {"endpoint_url": backend.url}, HEADERS) as (_response, stream):
            registration_id = next(stream)[1]["registration_id"]
            assert next(stream)[0] == "heartbeat"
            lock = write_lock_held(database)
            lock.__enter__()  # the lease's end has to wait for the lock ...
        try:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:  # ... while the worker keeps answering
                answer = httpx.get(f"{gateway.url}/openapi.json", timeout=0.5)
                assert answer.status_code == 200
                time.sleep(0.05)  # pacing, not waiting for anything
        finally:
            lock.__exit__(None, None, None)

    def released() -> bool:
        with database.reading() as session:
            row = session.get(ModelServer, registration_id)
            return row is not None and row.lease_connected_at is None

    wait_for(released, timeout=10, what="the lease released once the lock is free")
