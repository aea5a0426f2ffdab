"""The keys and groups admin API over real HTTP: a real gateway process for the life of
a key, an in-thread gateway for the table of bad input."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from gateway.admission.key_format import key_hash
from shared.db import Database
from shared.models import ClientKey, KeysGeneration, KeyUsageMinute
from tests.conftest import ADMIN_KEY
from tests.support import GatewayProcess, ThreadedServer, process_settings

HEADERS = {"X-API-Key": ADMIN_KEY}


@pytest.fixture
def gateway_process(tmp_path: Path, database_url: str) -> Iterator[GatewayProcess]:
    settings = process_settings(tmp_path, database_url, TOKEN_RESERVATION_DEFAULT="500")
    with GatewayProcess(tmp_path, settings) as process:
        yield process


def call(gateway: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", HEADERS)
    return httpx.request(
        method, f"{gateway.url}/admin{path}", headers=headers, timeout=15, **kwargs
    )


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    return error


def test_a_key_is_issued_shown_once_listed_changed_and_revoked(
    gateway_process: GatewayProcess, database: Database, tmp_path: Path
) -> None:
    gateway = gateway_process
    group = call(
        gateway,
        "PUT",
        "/groups/cs101",
        json={"limits": {"requests_per_minute": 20}, "models": ["demo", "tiny"]},
    )
    assert group.status_code == 201, group.text
    assert group.json()["keys"] == 0
    expires = (datetime.now(UTC) + timedelta(days=90)).isoformat()
    created = call(
        gateway,
        "POST",
        "/keys",
        json={
            "name": "laptop",
            "owner": "alice",
            "group": "cs101",
            "models": ["demo", "other"],
            "limits": {"tokens_per_day": 100000},
            "expires_at": expires,
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith("mvk_") and body["prefix"] == key[:8]
    assert body["status"] == "active" and body["group"] == "cs101"
    assert body["limits"] == {"tokens_per_day": 100000}
    effective = body["effective_limits"]
    assert effective["tokens_per_day"] == 100000 and effective["requests_per_minute"] == 20
    assert body["allowed_models"] == ["demo"]  # its own list within its group's
    with database.reading() as session:
        row = session.scalars(select(ClientKey)).one()
        assert row.key_hash == key_hash(key) and row.prefix == key[:8]

    listed = call(gateway, "GET", "/keys")
    shown = call(gateway, "GET", f"/keys/{body['id']}")
    for answer in (listed, shown):
        assert (
            answer.status_code == 200
            and key not in answer.text
            and key_hash(key) not in answer.text
        )
    assert [k["id"] for k in listed.json()] == [body["id"]]
    assert "key" not in shown.json() and shown.json()["prefix"] == key[:8]
    assert call(gateway, "GET", "/keys", params={"owner": "bob"}).json() == []
    assert len(call(gateway, "GET", "/keys", params={"group": "cs101"}).json()) == 1
    assert call(gateway, "GET", "/groups/cs101").json()["keys"] == 1

    with database.reading() as session:
        generation = session.get(KeysGeneration, 1)
        assert generation is not None
        before = generation.value
    changed = call(
        gateway,
        "PATCH",
        f"/keys/{body['id']}",
        json={
            "name": "desktop",
            "limits": {"requests_per_minute": 5, "tokens_per_day": None},
            "models": None,
            "group": None,
        },
    )
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert after["name"] == "desktop" and after["group"] is None and after["models"] is None
    assert after["limits"] == {"requests_per_minute": 5}  # merged, the nulled one cleared
    assert after["allowed_models"] is None and after["expires_at"] is not None
    merged = call(gateway, "PATCH", f"/keys/{body['id']}", json={"limits": {"max_concurrent": 2}})
    assert merged.json()["limits"] == {"requests_per_minute": 5, "max_concurrent": 2}
    with database.reading() as session:
        generation = session.get(KeysGeneration, 1)
        assert generation is not None and generation.value > before  # workers reload

    # Usage today, as the request path's rows record it.
    minute = int(datetime.now(UTC).timestamp()) // 60
    with database.writing() as session:
        session.add(
            KeyUsageMinute(
                minute=minute,
                key_id=body["id"],
                model="demo",
                requests=3,
                failures=1,
                prompt_tokens=30,
                completion_tokens=12,
                latency_counts=[],
            )
        )
    usage = call(gateway, "GET", f"/keys/{body['id']}").json()["usage_today"]
    assert usage == {"requests": 3, "failures": 1, "prompt_tokens": 30, "completion_tokens": 12}

    revoked = call(gateway, "DELETE", f"/keys/{body['id']}")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    again = call(gateway, "DELETE", f"/keys/{body['id']}")
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert call(gateway, "GET", "/keys").json() == []
    everything = call(gateway, "GET", "/keys", params={"include_revoked": "true"}).json()
    assert [k["status"] for k in everything] == ["revoked"]
    assert everything[0]["usage_today"]["requests"] == 3  # its history stays
    error_of(call(gateway, "PATCH", f"/keys/{body['id']}", json={"name": "x"}), 409)

    # The key is in no log line, no answer but the 201.
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "client key issued" in logs and key not in logs
    assert key not in gateway_process.log_path.read_text()


def test_groups_are_set_listed_and_deleted_only_when_no_key_uses_them(
    gateway_process: GatewayProcess,
) -> None:
    gateway = gateway_process
    assert call(gateway, "PUT", "/groups/lab", json={}).status_code == 201
    replaced = call(gateway, "PUT", "/groups/lab", json={"limits": {"max_concurrent": 2}})
    assert replaced.status_code == 200 and replaced.json()["limits"] == {"max_concurrent": 2}
    key = call(gateway, "POST", "/keys", json={"name": "k", "owner": "carol", "group": "lab"})
    refused = error_of(call(gateway, "DELETE", "/groups/lab"), 409)
    assert "1 key" in refused["message"]
    call(gateway, "DELETE", f"/keys/{key.json()['id']}")
    assert call(gateway, "DELETE", "/groups/lab").json() == {"name": "lab", "status": "deleted"}
    error_of(call(gateway, "GET", "/groups/lab"), 404)
    assert call(gateway, "GET", "/groups").json() == []


def test_a_batch_is_created_whole_or_not_at_all(gateway: ThreadedServer) -> None:
    rows = [{"name": "cs101", "owner": f"student{i}"} for i in range(3)]
    created = call(gateway, "POST", "/keys/batch", json={"keys": rows})
    assert created.status_code == 201, created.text
    keys = [k["key"] for k in created.json()["keys"]]
    assert len(set(keys)) == 3
    again = call(
        gateway, "POST", "/keys/batch", json={"keys": [{"name": "cs101", "owner": "new"}, rows[1]]}
    )
    error = error_of(again, 409)
    assert error["param"] == "keys[1].name" and "student1" in error["message"]
    assert len(call(gateway, "GET", "/keys").json()) == 3  # "new" was not created
    twice = call(gateway, "POST", "/keys/batch", json={"keys": [rows[0], rows[0]]})
    assert error_of(twice, 409)["param"] == "keys[0].name"


PAST = "2020-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "k", "owner": ""}, "owner"),
        ({"name": "k", "owner": "   "}, "owner"),
        ({"name": "", "owner": "a"}, "name"),
        ({"owner": "a"}, "name"),
        ({"name": "k", "owner": "a\nb"}, "owner"),
        (
            {"name": "k", "owner": "a", "limits": {"requests_per_minute": -1}},
            "limits.requests_per_minute",
        ),
        (
            {"name": "k", "owner": "a", "limits": {"tokens_per_minute": 100}},
            "limits.tokens_per_minute",
        ),  # below one request's reservation (1024)
        ({"name": "k", "owner": "a", "limits": {"tokens_per_day": 1.5}}, "limits.tokens_per_day"),
        (
            {"name": "k", "owner": "a", "limits": {"requests_per_hour": 5}},
            "limits.requests_per_hour",
        ),
        ({"name": "k", "owner": "a", "limits": [1]}, "limits"),
        ({"name": "k", "owner": "a", "limits": {"priority": 0}}, "limits.priority"),
        ({"name": "k", "owner": "a", "models": "demo"}, "models"),
        ({"name": "k", "owner": "a", "models": [1]}, "models.0"),
        ({"name": "k", "owner": "a", "models": []}, "models"),
        ({"name": "k", "owner": "a", "expires_at": PAST}, "expires_at"),
        ({"name": "k", "owner": "a", "expires_at": "soon"}, "expires_at"),
        ({"name": "k", "owner": "a", "group": "no such"}, "group"),
        ({"name": "k", "owner": "a", "group": "nosuch"}, "group"),
        ({"name": "k", "owner": "a", "key": "mvk_mine"}, "key"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    gateway: ThreadedServer, body: dict[str, Any], param: str
) -> None:
    error = error_of(call(gateway, "POST", "/keys", json=body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert call(gateway, "GET", "/keys").json() == []


def test_bad_updates_and_groups_are_400s(gateway: ThreadedServer) -> None:
    key = call(gateway, "POST", "/keys", json={"name": "k", "owner": "a"}).json()
    path = f"/keys/{key['id']}"
    assert error_of(call(gateway, "PATCH", path, json={}), 400)["message"].startswith("the update")
    assert error_of(call(gateway, "PATCH", path, json={"name": None}), 400)["param"] == "name"
    assert error_of(call(gateway, "PATCH", path, json={"expires_at": PAST}), 400)["param"] == (
        "expires_at"
    )
    bad_limit = call(gateway, "PATCH", path, json={"limits": {"max_concurrent": -2}})
    assert error_of(bad_limit, 400)["param"] == "limits.max_concurrent"
    error_of(call(gateway, "PATCH", "/keys/nope", json={"name": "x"}), 404)
    error_of(call(gateway, "DELETE", "/keys/nope"), 404)
    assert error_of(call(gateway, "PUT", "/groups/a b", json={}), 400)["param"] == "name"
    assert (
        error_of(call(gateway, "PUT", "/groups/g", json={"limits": {"tokens_per_day": -5}}), 400)[
            "param"
        ]
        == "limits.tokens_per_day"
    )
    assert error_of(call(gateway, "GET", "/keys", params={"limit": "-1"}), 400)["param"] == "limit"
    assert call(gateway, "GET", path).json()["limits"] == {}  # nothing changed


def test_a_key_that_could_use_no_model_is_refused(gateway: ThreadedServer) -> None:
    """A key's own models must meet its group's: none in common is a 400 naming
    `models`, on create, on update, and on moving the key to such a group (it was
    stored, silently leaving a key that reaches nothing; from a new user's trial)."""
    assert call(gateway, "PUT", "/groups/cs101", json={"models": ["demo"]}).status_code == 201
    made = call(gateway, "POST", "/keys", json={"name": "k", "owner": "o", "models": ["tiny"]})
    assert made.status_code == 201
    key = made.json()
    refused = error_of(call(gateway, "PATCH", f"/keys/{key['id']}", json={"group": "cs101"}), 400)
    assert refused["param"] == "models" and "'cs101'" in refused["message"]
    in_group = call(gateway, "POST", "/keys", json={"name": "g", "owner": "o", "group": "cs101"})
    path = f"/keys/{in_group.json()['id']}"
    assert error_of(call(gateway, "PATCH", path, json={"models": ["tiny"]}), 400)["param"] == (
        "models"
    )
    batch = {"keys": [{"name": "b", "owner": "p", "group": "cs101", "models": ["tiny"]}]}
    assert error_of(call(gateway, "POST", "/keys/batch", json=batch), 400)["param"] == (
        "keys[0].models"
    )
    both = call(gateway, "PATCH", path, json={"models": ["tiny", "demo"]})
    assert both.status_code == 200 and both.json()["allowed_models"] == ["demo"]
    # Nor can the group's models be changed to leave one of its keys without any.
    stranding = call(gateway, "PUT", "/groups/cs101", json={"models": ["other"]})
    refused = error_of(stranding, 400)
    assert refused["param"] == "models" and in_group.json()["id"] in refused["message"], refused
    assert call(gateway, "GET", "/groups/cs101").json()["models"] == ["demo"]  # unchanged
    assert call(gateway, "PUT", "/groups/cs101", json={"models": ["tiny"]}).status_code == 200


def test_only_the_admin_key_manages_keys(start_gateway: Any, demo_backend: ThreadedServer) -> None:
    gateway = start_gateway(registration_keys=["class-registration-key"])
    token = call(gateway, "POST", "/register", json={"endpoint_url": demo_backend.url}).json()[
        "management_token"
    ]
    body = {"name": "k", "owner": "a"}
    for headers in ({"X-API-Key": "class-registration-key"}, {"X-Management-Token": token}):
        for method, path in (
            ("POST", "/keys"),
            ("GET", "/keys"),
            ("POST", "/keys/batch"),
            ("PUT", "/groups/g"),
            ("GET", "/groups"),
        ):
            error_of(call(gateway, method, path, json=body, headers=headers), 403)
    error_of(call(gateway, "GET", "/keys", headers={}), 401)
    assert call(gateway, "GET", "/keys").json() == []


def test_a_key_issued_works_at_once_and_a_revoked_one_is_refused_at_once(
    start_gateway: Any, demo_backend: ThreadedServer
) -> None:
    """The worker that wrote a key honours it before its answer goes out (the others
    within the keys' poll: tests/gateway/admission/test_client_keys.py), with the real
    openai SDK; a group's limits reach the key the same way."""
    gateway = start_gateway()
    registered = call(gateway, "POST", "/register", json={"endpoint_url": demo_backend.url})
    assert registered.status_code == 201, registered.text
    created = call(gateway, "POST", "/keys", json={"name": "laptop", "owner": "alice"}).json()
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=created["key"], max_retries=0)
    messages: Any = [{"role": "user", "content": "hi"}]
    reply = client.chat.completions.with_raw_response.create(model="demo", messages=messages)
    assert reply.http_response.status_code == 200
    with pytest.raises(openai.AuthenticationError):  # a key exists: /v1 needs one now
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0).models.list()

    call(gateway, "PUT", "/groups/tiny", json={"models": ["nothing-like-demo"]})
    moved = call(gateway, "PATCH", f"/keys/{created['id']}", json={"group": "tiny"})
    assert moved.json()["allowed_models"] == ["nothing-like-demo"]
    with pytest.raises(openai.NotFoundError):  # the group's models, at once
        client.chat.completions.create(model="demo", messages=messages)
    call(gateway, "PATCH", f"/keys/{created['id']}", json={"group": None})
    assert client.chat.completions.create(model="demo", messages=messages).choices

    call(gateway, "DELETE", f"/keys/{created['id']}")
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="demo", messages=messages)
    assert "revoked" in str(refused.value) and created["key"] not in str(refused.value)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"expires_at": "tomorrow"}, "expires_at", "ISO 8601 date or time, e.g. 2027-02-01"),
        ({"name": "a\nb"}, "name", "printable text, without control characters"),
        ({"group": "a b"}, "group", "only letters, digits, _ . -"),
        ({"group": "a" * 101}, "group", "should be 1 to 100 characters, starting with a letter"),
        ({"models": [""]}, "models.0", "printable text of 1 to 256 characters"),
        ({"models": ["m" * 257]}, "models.0", "printable text of 1 to 256 characters"),
    ],
)
def test_a_bad_fields_400_says_what_it_takes(
    gateway: ThreadedServer, body: dict[str, Any], param: str, words: str
) -> None:
    """Not pydantic's regular expressions and parser details (from a new user's trial)."""
    error = error_of(call(gateway, "POST", "/keys", json={"name": "k", "owner": "o", **body}), 400)
    assert error["param"] == param and words in error["message"], error
    assert "pattern" not in error["message"] and "too short" not in error["message"]
