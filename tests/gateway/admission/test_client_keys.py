"""Client keys on the request path (#20): who may call, each limit's 429 and headers,
reservations corrected by usage, usage per key, a group's models; through a real
uvicorn (and, for what must hold across workers, a real `gateway` with 2 workers).

Keys are issued here as the admin API does it (a row written; the trigger tells
the workers): these tests are about the request path, not the admin API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import update

from gateway.admission.key_format import key_hash, new_key, visible_prefix
from shared.db import Database
from shared.models import ClientGroup, ClientKey, KeyUsageMinute, utcnow
from tests.fakes import ScriptedBackend
from tests.gateway.proxy.test_proxy import register, register_routable, sdk
from tests.support import ADMIN_KEY, GatewayProcess, ThreadedServer, process_settings, wait_for

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def issue_key(database: Database, *, owner: str = "s1", **fields: Any) -> tuple[str, str]:
    """A key as POST /admin/keys makes one: (the key, its id)."""
    key = new_key()
    row = ClientKey(
        name=fields.pop("name", f"{owner}'s key"),
        owner=owner,
        key_hash=key_hash(key),
        prefix=visible_prefix(key),
        limits=fields.pop("limits", {}),
        **fields,
    )
    with database.writing() as session:
        session.add(row)
        session.flush()
        key_id = row.id
    return key, key_id


def set_key(database: Database, key_id: str, **values: Any) -> None:
    with database.writing() as session:
        session.execute(update(ClientKey).where(ClientKey.id == key_id).values(**values))


def wait_known(gateway: ThreadedServer | GatewayProcess, key: str) -> None:
    """Until the gateway knows the key (GET /v1/me answers only a known key)."""
    auth = {"Authorization": f"Bearer {key}"}
    wait_for(lambda: httpx.get(f"{gateway.url}/v1/me", headers=auth).status_code == 200, timeout=5)


def post(
    gateway: ThreadedServer | GatewayProcess, key: str | None, body: dict[str, Any]
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # A new connection each time: with several workers, each may take it.
    with httpx.Client(timeout=10) as client:
        return client.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)


def honoured_within(send: Callable[[], int], wanted: int, since: float) -> float:
    """Seconds from `since` until `send` gave `wanted` ten times in a row."""
    run_began = None
    run = 0
    deadline = time.monotonic() + 10
    while run < 10:
        assert time.monotonic() < deadline, "never honoured"
        now = time.monotonic()
        if send() == wanted:
            run_began = now if run == 0 else run_began
            run += 1
        else:
            run = 0
    assert run_began is not None
    return run_began - since


@pytest.fixture
def backend() -> Iterator[tuple[ScriptedBackend, ThreadedServer]]:
    scripted = ScriptedBackend("m")
    with ThreadedServer(scripted.app) as server:
        yield scripted, server


@pytest.fixture
def keyed(
    start_gateway: Callable[..., ThreadedServer],
    backend: tuple[ScriptedBackend, ThreadedServer],
) -> ThreadedServer:
    gateway = start_gateway(rate_limit_per_minute=0)
    register_routable(gateway, backend[1].url)
    return gateway


def test_who_may_call(keyed: ThreadedServer, database: Database) -> None:
    """Open until a key exists; then a key is required, an unknown one is "invalid", a
    revoked or expired one says so; a key never appears in an answer."""
    assert post(keyed, None, CHAT).status_code == 200
    key, key_id = issue_key(database)
    wait_for(lambda: post(keyed, None, CHAT).status_code == 401, timeout=5)
    missing = post(keyed, None, CHAT).json()["error"]
    assert missing["type"] == "authentication_error" and "missing API key" in missing["message"]
    assert post(keyed, key, CHAT).status_code == 200
    # The admin key works on /v1 too (the web pages use it), with no limits.
    admin = {"X-API-Key": ADMIN_KEY}
    assert httpx.get(f"{keyed.url}/v1/models", headers=admin).status_code == 200
    assert (
        httpx.post(f"{keyed.url}/v1/chat/completions", json=CHAT, headers=admin).status_code == 200
    )
    unknown = post(keyed, key + "x", CHAT)
    assert unknown.status_code == 401 and unknown.json()["error"]["message"] == "invalid API key"
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        sdk(keyed, api_key="mvk_nonsense").chat.completions.create(model="m", messages=[])

    other, other_id = issue_key(database, owner="s2")
    set_key(database, other_id, expires_at=utcnow() - timedelta(seconds=1))
    set_key(database, key_id, revoked_at=utcnow())
    wait_for(lambda: post(keyed, key, CHAT).status_code == 401, timeout=5)
    revoked = post(keyed, key, CHAT).json()["error"]["message"]
    assert "was revoked on" in revoked and visible_prefix(key) in revoked
    assert key not in revoked
    expired = post(keyed, other, CHAT)
    assert expired.status_code == 401 and "expired on" in expired.json()["error"]["message"]
    # Every key revoked or expired: nobody holds a valid key, but /v1 stays closed?
    # No: the rule is "while any key is active" (one expired a moment ago counts no more).
    wait_for(lambda: post(keyed, None, CHAT).status_code == 200, timeout=5)


def test_each_limit_answers_its_429_with_headers(keyed: ThreadedServer, database: Database) -> None:
    key, _ = issue_key(database, limits={"requests_per_minute": 2})
    wait_known(keyed, key)
    assert post(keyed, key, CHAT).status_code == 200
    second = post(keyed, key, CHAT)
    assert second.status_code == 200
    assert second.headers["x-ratelimit-limit-requests"] == "2"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.headers["x-ratelimit-reset-requests"] in ("59s", "1m0s")
    third = post(keyed, key, CHAT)
    assert third.status_code == 429
    error = third.json()["error"]
    assert error["type"] == "rate_limit_error" and error["param"] == "requests_per_minute"
    assert "2 requests per minute" in error["message"]
    assert 1 <= int(third.headers["retry-after"]) <= 30
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError, match="requests per minute"):
        sdk(keyed, api_key=key).chat.completions.create(model="m", messages=[])
    limited = 'gateway_client_limited_total{group="",limit="requests_per_minute"}'
    wait_for(lambda: limited in httpx.get(f"{keyed.url}/metrics").text, timeout=5)

    tokens, _ = issue_key(database, owner="s2", limits={"tokens_per_minute": 3000})
    wait_known(keyed, tokens)
    assert post(keyed, tokens, {**CHAT, "max_tokens": 10}).status_code == 200
    big = post(keyed, tokens, {**CHAT, "max_tokens": 3001})
    # It could never pass as sent: a 400 (an SDK would retry a 429 for nothing).
    assert big.status_code == 400 and big.json()["error"]["param"] == "tokens_per_minute"
    assert "lower max_tokens" in big.json()["error"]["message"]
    assert "retry-after" not in big.headers  # it would never pass as sent
    ok = post(keyed, tokens, {**CHAT, "max_tokens": 2500})
    assert ok.headers["x-ratelimit-limit-tokens"] == "3000"
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) < 500  # the reservation
    refused = post(keyed, tokens, {**CHAT, "max_tokens": 2500})
    # The first 2,500 were corrected to the 7 used: the second fits.
    assert refused.status_code == 200, refused.text

    daily, _ = issue_key(database, owner="s3", limits={"tokens_per_day": 2000})
    wait_known(keyed, daily)
    assert post(keyed, daily, {**CHAT, "max_tokens": 1900}).status_code == 200
    over = post(keyed, daily, {**CHAT, "max_tokens": 1980})  # fits a day, not this one
    assert over.status_code == 429 and over.json()["error"]["param"] == "tokens_per_day"
    assert "00:00 UTC" in over.json()["error"]["message"]
    assert int(over.headers["retry-after"]) > 0
    assert over.headers["x-ratelimit-limit-tokens-day"] == "2000"


def test_concurrency_limit_and_stream_correction(
    keyed: ThreadedServer, database: Database, backend: tuple[ScriptedBackend, ThreadedServer]
) -> None:
    """A stream holds its place in flight until it ends, and its reservation is
    corrected by the usage in its last event."""
    scripted, _ = backend
    key, _ = issue_key(database, limits={"max_concurrent": 1, "tokens_per_minute": 3000})
    wait_known(keyed, key)
    assert post(keyed, key, {**CHAT, "max_tokens": 1}).status_code == 200
    scripted.behavior = "slow_stream"  # five events 0.2 s apart
    client = sdk(keyed, api_key=key)
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2500, stream=True
    )
    first = next(iter(stream))
    assert first.choices[0].delta.content == "part0 "
    busy = post(keyed, key, {**CHAT, "max_tokens": 1})
    assert busy.status_code == 429 and busy.json()["error"]["param"] == "max_concurrent"
    assert list(stream)  # to its end
    scripted.behavior = "ok"
    # The stream reserved ~2,500 of 3,000 and used 11: another 2,500 fits at once.
    wait_known(keyed, key)
    assert post(keyed, key, {**CHAT, "max_tokens": 2500}).status_code == 200


def test_usage_per_key_matches_what_was_sent(
    keyed: ThreadedServer, database: Database, backend: tuple[ScriptedBackend, ThreadedServer]
) -> None:
    key, key_id = issue_key(database, limits={"requests_per_minute": 6})
    other, _ = issue_key(database, owner="s2")
    wait_known(keyed, key)
    assert post(keyed, key, CHAT).status_code == 200  # 3 + 4 tokens
    client = sdk(keyed, api_key=key)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    for _ in client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    ):
        pass  # 5 + 6 tokens
    post(keyed, other, CHAT)  # someone else's

    def today() -> dict[str, int]:
        answer = httpx.get(f"{keyed.url}/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text
        usage: dict[str, int] = answer.json()["usage"]["today"]
        return usage

    wait_for(lambda: today()["requests"] == 3, timeout=10)
    assert today() == {"requests": 3, "failures": 0, "prompt_tokens": 11, "completion_tokens": 14}
    me = httpx.get(f"{keyed.url}/v1/me", headers={"Authorization": f"Bearer {key}"}).json()
    assert me["key"]["id"] == key_id and me["key"]["prefix"] == visible_prefix(key)
    assert key not in str(me)
    assert me["limits"]["requests_per_minute"] == 6
    assert me["remaining"]["requests_this_minute"] in (3, 4)  # (one back every 10 s)
    assert httpx.get(f"{keyed.url}/v1/me").status_code == 401
    # The log line of each request names the key's id, never the key.
    logs = "".join(path.read_text() for path in Path("logs").glob("*"))
    assert key_id in logs and key not in logs and other not in logs


def test_a_group_sees_only_its_models(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    gateway = start_gateway(rate_limit_per_minute=0)
    one, two = ScriptedBackend("m"), ScriptedBackend("n")
    with ThreadedServer(one.app) as first, ThreadedServer(two.app) as second:
        register_routable(gateway, first.url)
        register_routable(gateway, second.url, model_name="n")
        with database.writing() as session:
            session.add(ClientGroup(name="class-a", limits={}, models=["m"]))
        key, _ = issue_key(database, group_name="class-a")
        auth = {"Authorization": f"Bearer {key}"}
        wait_known(gateway, key)
        assert post(gateway, key, CHAT).status_code == 200
        listed = httpx.get(f"{gateway.url}/v1/models", headers=auth).json()["data"]
        assert [entry["id"] for entry in listed] == ["m"]
        assert httpx.get(f"{gateway.url}/v1/models/n", headers=auth).status_code == 404
        refused = post(gateway, key, {**CHAT, "model": "n"})
        assert refused.status_code == 404 and "not found" in refused.json()["error"]["message"]
        assert [
            m["name"] for m in httpx.get(f"{gateway.url}/api/tags", headers=auth).json()["models"]
        ] == ["m"]
        registry = httpx.get(f"{gateway.url}/registry", headers=auth).json()
        assert list(registry["models"]) == ["m"]
        unknown = post(gateway, key, {**CHAT, "model": "zzz"}).json()["error"]["message"]
        assert unknown == "model 'zzz' not found"  # nothing said of models outside the group


def test_keys_and_limits_hold_across_workers(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    """A real gateway with 2 workers: a key issued works on both within 1 s, its 10
    requests a minute are 10 for both together, and a revoked key is refused by both
    within 1 s."""
    scripted = ScriptedBackend("m")
    with ThreadedServer(scripted.app) as server:
        settings = process_settings(tmp_path, database_url, WORKERS="2", RATE_LIMIT_PER_MINUTE="0")
        with GatewayProcess(tmp_path, settings) as gateway:
            register_routable(gateway, server.url)  # type: ignore[arg-type]
            issued_at = time.monotonic()
            created = httpx.post(
                f"{gateway.url}/admin/keys",
                json={"name": "laptop", "owner": "s1", "limits": {"requests_per_minute": 1000}},
                headers={"X-API-Key": ADMIN_KEY},
            )
            assert created.status_code == 201, created.text
            key, key_id = created.json()["key"], created.json()["id"]
            # The worker that wrote it honours it before answering: the next request works.
            assert post(gateway, key, CHAT).status_code in (200, 401)
            assert (
                honoured_within(lambda: post(gateway, key, CHAT).status_code, 200, issued_at) < 1.0
            )

            limited, _ = issue_key(database, owner="s2", limits={"requests_per_minute": 10})
            wait_known(gateway, limited)  # by one worker; the other within a poll:
            wait_for(lambda: post(gateway, limited, CHAT).status_code == 200, timeout=5)
            statuses = [post(gateway, limited, CHAT).status_code for _ in range(30)]
            # 1 already spent; the bucket refills 1 every 6 s, so at most one more in these.
            assert statuses.count(200) in (9, 10), statuses

            # Many at once, from threads: still one count.
            burst, _ = issue_key(database, owner="s3", limits={"requests_per_minute": 20})
            wait_known(gateway, burst)  # by one worker; the other within a poll:
            wait_for(lambda: post(gateway, burst, CHAT).status_code == 200, timeout=5)
            results: list[int] = []
            threads = [
                threading.Thread(
                    target=lambda: results.append(post(gateway, burst, CHAT).status_code)
                )
                for _ in range(40)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert results.count(200) in (19, 20), results

            revoked_at = time.monotonic()
            set_key(database, key_id, revoked_at=utcnow())
            assert (
                honoured_within(lambda: post(gateway, key, CHAT).status_code, 401, revoked_at) < 1.0
            )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_restart_does_not_give_a_key_its_day_again(
    tmp_path: Path, database_url: str, database: Database, workers: str
) -> None:
    """Today's tokens (key_usage_minutes) are where a fresh gateway starts counting: one
    worker seeds its own counters, several find them seeded by the supervisor."""
    key, key_id = issue_key(database, limits={"tokens_per_day": 5000})
    now_minute = int(time.time() // 60)
    with database.writing() as session:
        session.add(
            KeyUsageMinute(
                minute=now_minute,
                key_id=key_id,
                model="m",
                requests=9,
                failures=0,
                prompt_tokens=2000,
                completion_tokens=2500,
                latency_counts=[],
            )
        )
    scripted = ScriptedBackend("m")
    with ThreadedServer(scripted.app) as server:
        settings = process_settings(
            tmp_path, database_url, RATE_LIMIT_PER_MINUTE="0", WORKERS=workers
        )
        with GatewayProcess(tmp_path, settings) as gateway:
            register(gateway, "m", server.url)  # type: ignore[arg-type]
            wait_for(lambda: post(gateway, key, {**CHAT, "max_tokens": 1}).status_code == 200)
            answer = post(gateway, key, {**CHAT, "max_tokens": 600})
            assert answer.status_code == 429, answer.text
            assert answer.json()["error"]["param"] == "tokens_per_day"
            assert post(gateway, key, {**CHAT, "max_tokens": 400}).status_code == 200


def test_anthropics_sdk_sends_its_key_as_x_api_key(
    keyed: ThreadedServer, database: Database
) -> None:
    """Claude Code and the anthropic SDK send `x-api-key`, not a Bearer token."""
    import anthropic

    key, _ = issue_key(database)
    wait_known(keyed, key)
    client = anthropic.Anthropic(base_url=keyed.url, api_key=key, max_retries=0)
    message = client.messages.create(
        model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text" and "hi from m" in message.content[0].text
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=keyed.url, api_key="mvk_wrong", max_retries=0).messages.create(
            model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )


def test_the_gateway_opens_again_when_its_last_key_expires(
    keyed: ThreadedServer, database: Database
) -> None:
    """Expiry by time needs no reload: the ring knows when its last active key expires."""
    key, _ = issue_key(database, expires_at=utcnow() + timedelta(seconds=2))
    wait_known(keyed, key)
    assert post(keyed, None, CHAT).status_code == 401
    wait_for(lambda: post(keyed, None, CHAT).status_code == 200, timeout=10)
    assert "expired on" in post(keyed, key, CHAT).json()["error"]["message"]


def test_a_key_whose_group_is_gone_may_use_nothing(
    keyed: ThreadedServer, database: Database
) -> None:
    """(The group deleted as the key was moved into it, on PostgreSQL: never every model.)"""
    key, _ = issue_key(database, group_name="vanished")
    wait_known(keyed, key)
    refused = post(keyed, key, CHAT)
    assert refused.status_code == 404 and "not found" in refused.text
    listed = httpx.get(f"{keyed.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert listed.json()["data"] == []
