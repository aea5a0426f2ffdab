"""Owned model names (#21 item 4): a claimed name refuses another owner's server and
serves only its owner and co-hosts; an opened name accepts everyone; unclaimed names
pool as before; hosts stay within the admin's limits on weight and priority."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest

from gateway.cli.demo_backend import create_demo_app
from gateway.ownership.limits import HostLimits
from gateway.routing.claims import Claim, may_serve
from shared.errors import PermissionDenied
from tests.support import ADMIN_KEY, ThreadedServer

ADMIN = {"X-API-Key": ADMIN_KEY}
CLASS_KEY = "class-registration-key-2026"
CLASS = {"X-API-Key": CLASS_KEY}

OWNED = Claim("llama", "alice-id", "alice", frozenset({"carol-id"}))


@pytest.mark.parametrize(
    ("claim", "registration", "expected"),
    [
        (None, "anyone", True),
        (OWNED, "alice-id", True),
        (OWNED, "carol-id", True),
        (OWNED, "bob-id", False),
        (Claim("llama", None, None), "bob-id", False),
    ],
)
def test_who_may_serve_a_name(claim: Claim | None, registration: str, expected: bool) -> None:
    assert may_serve(claim, registration) is expected


@pytest.mark.parametrize(
    ("weight", "priority", "refused"),
    [(10, 2, None), (11, None, "weight"), (None, 1, "priority"), (None, None, None)],
)
def test_host_limits(weight: int | None, priority: int | None, refused: str | None) -> None:
    limits = HostLimits(max_weight=10, admin_tiers=2)
    if refused is None:
        limits.check(weight=weight, priority=priority)
        return
    with pytest.raises(PermissionDenied) as error:
        limits.check(weight=weight, priority=priority)
    assert error.value.param == refused


@pytest.fixture
def backends() -> Iterator[Callable[[str], ThreadedServer]]:
    with ExitStack() as stack:

        def start(model: str) -> ThreadedServer:
            return stack.enter_context(ThreadedServer(create_demo_app(model, chunk_interval_ms=0)))

        yield start


def register(gateway: ThreadedServer, headers: dict[str, str], **body: object) -> httpx.Response:
    return httpx.post(f"{gateway.url}/admin/register", json=body, headers=headers, timeout=15)


def servers_answering(gateway: ThreadedServer, model: str, times: int = 6) -> set[str]:
    """(Under round robin: `auto` would keep one conversation on one server.)"""
    seen = set()
    for _ in range(times):
        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            timeout=15,
        )
        assert answer.status_code == 200, answer.text
        seen.add(answer.headers["x-gateway-server-id"])
    return seen


def test_a_claimed_name_is_served_by_its_owner_and_co_hosts_only(
    start_gateway: Callable[..., ThreadedServer], backends: Callable[[str], ThreadedServer]
) -> None:
    gateway = start_gateway(
        registration_keys=[CLASS_KEY], rate_limit_per_minute=0, routing_strategy="round_robin"
    )
    alice = register(
        gateway,
        CLASS,
        endpoint_url=backends("llama").url,
        model_name="llama",
        claim=True,
        metadata={"student_id": "alice"},
    )
    assert alice.status_code == 201, alice.text
    alice_id, alice_token = alice.json()["registration_id"], alice.json()["management_token"]

    # Another owner's explicit registration of the name: 403 naming the owner and the way.
    bob_server = backends("llama")
    refused = register(gateway, CLASS, endpoint_url=bob_server.url, model_name="llama")
    assert refused.status_code == 403, refused.text
    message = refused.json()["error"]["message"]
    assert "claimed by alice" in message and "co-host" in message

    # A server that merely lists it registers, but does not serve it, and says why.
    bob = register(gateway, CLASS, endpoint_url=bob_server.url)
    assert bob.status_code == 201, bob.text
    bob_id, bob_token = bob.json()["registration_id"], bob.json()["management_token"]
    assert bob.json()["served_models"] == []
    shown = httpx.get(f"{gateway.url}/admin/servers/{bob_id}", headers=ADMIN).json()
    assert shown["withheld_models"][0]["model"] == "llama"
    assert "claimed by alice" in shown["withheld_models"][0]["reason"]
    assert servers_answering(gateway, "llama") == {alice_id}
    registry = httpx.get(f"{gateway.url}/registry").json()
    assert registry["claims"]["llama"]["owner"] == "alice"

    # Bob may not claim it, nor open it, nor make himself a co-host.
    bob_headers = {"X-Management-Token": bob_token}
    for path, body in (("claim", None), ("open", None), ("cohosts", {"registration_id": bob_id})):
        answer = httpx.post(
            f"{gateway.url}/admin/models/llama/{path}", json=body, headers=bob_headers
        )
        assert answer.status_code == 403, (path, answer.text)

    # The owner allows bob as a co-host: both serve it.
    alice_headers = {"X-Management-Token": alice_token}
    added = httpx.post(
        f"{gateway.url}/admin/models/llama/cohosts",
        json={"registration_id": bob_id},
        headers=alice_headers,
    )
    assert added.status_code == 200, added.text
    assert added.json()["co_hosts"] == [bob_id]
    assert servers_answering(gateway, "llama") == {alice_id, bob_id}

    # Opened: another owner's explicit registration is accepted.
    opened = httpx.post(f"{gateway.url}/admin/models/llama/open", headers=alice_headers)
    assert opened.status_code == 200, opened.text
    carol = register(gateway, CLASS, endpoint_url=backends("llama").url, model_name="llama")
    assert carol.status_code == 201, carol.text


def test_unclaimed_names_pool_and_a_pooled_name_is_not_a_hosts_to_take(
    start_gateway: Callable[..., ThreadedServer], backends: Callable[[str], ThreadedServer]
) -> None:
    gateway = start_gateway(
        registration_keys=[CLASS_KEY], rate_limit_per_minute=0, routing_strategy="round_robin"
    )
    first = register(gateway, CLASS, endpoint_url=backends("tiny").url, model_name="tiny")
    second = register(gateway, CLASS, endpoint_url=backends("tiny").url, model_name="tiny")
    ids = {first.json()["registration_id"], second.json()["registration_id"]}
    assert servers_answering(gateway, "tiny") == ids

    token = second.json()["management_token"]
    taken = httpx.post(
        f"{gateway.url}/admin/models/tiny/claim", headers={"X-Management-Token": token}
    )
    assert taken.status_code == 409, taken.text
    late = register(
        gateway, CLASS, endpoint_url=backends("tiny").url, model_name="tiny", claim=True
    )
    assert late.status_code == 409, late.text
    # The admin may do anything: give the name to the first server.
    given = httpx.post(
        f"{gateway.url}/admin/models/tiny/claim",
        json={"registration_id": first.json()["registration_id"]},
        headers=ADMIN,
    )
    assert given.status_code == 200, given.text
    assert servers_answering(gateway, "tiny") == {first.json()["registration_id"]}


def test_first_registrant_owns_when_names_are_not_open(
    start_gateway: Callable[..., ThreadedServer], backends: Callable[[str], ThreadedServer]
) -> None:
    gateway = start_gateway(registration_keys=[CLASS_KEY], open_model_names=False)
    first = register(gateway, CLASS, endpoint_url=backends("mine").url, model_name="mine")
    assert first.status_code == 201, first.text
    shown = httpx.get(
        f"{gateway.url}/admin/servers/{first.json()['registration_id']}", headers=ADMIN
    ).json()
    assert shown["owned_models"] == ["mine"]
    second = register(gateway, CLASS, endpoint_url=backends("mine").url, model_name="mine")
    assert second.status_code == 403, second.text


def test_hosts_stay_within_the_admins_limits(
    start_gateway: Callable[..., ThreadedServer], backends: Callable[[str], ThreadedServer]
) -> None:
    gateway = start_gateway(
        registration_keys=[CLASS_KEY], host_max_weight=5, admin_priority_tiers=1
    )
    heavy = register(gateway, CLASS, endpoint_url=backends("a").url, weight=6)
    assert heavy.status_code == 403 and "HOST_MAX_WEIGHT" in heavy.text
    first_tier = register(gateway, CLASS, endpoint_url=backends("a").url, priority=0)
    assert first_tier.status_code == 403 and "ADMIN_PRIORITY_TIERS" in first_tier.text
    host = register(gateway, CLASS, endpoint_url=backends("a").url, weight=5)
    assert host.status_code == 201, host.text
    host_id, token = host.json()["registration_id"], host.json()["management_token"]
    shown = httpx.get(f"{gateway.url}/admin/servers/{host_id}", headers=ADMIN).json()
    assert shown["priority"] == 1
    raised = httpx.put(
        f"{gateway.url}/admin/register/{host_id}",
        json={"weight": 50},
        headers={"X-Management-Token": token},
    )
    assert raised.status_code == 403, raised.text
    by_admin = httpx.put(
        f"{gateway.url}/admin/register/{host_id}", json={"weight": 50, "priority": 0}, headers=ADMIN
    )
    assert by_admin.status_code == 200 and by_admin.json()["weight"] == 50
