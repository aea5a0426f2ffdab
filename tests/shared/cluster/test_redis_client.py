"""The shared Redis module: prefixes, Lua scripts, the failure policy, a Redis that
stops and starts again (a redis-server of the test's own), and the Responses
owners cache on it."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from gateway.routing.affinity import ResponseOwners
from shared.cluster.redis_client import (
    LOG_EVERY_SECONDS,
    FailureLog,
    FailureMode,
    RedisUnavailable,
    SharedRedis,
    script_call,
)
from shared.db import Database
from shared.models import ModelServer
from tests.support import free_port, wait_for

# A counter reserved atomically: add, and set the expiry when the key is new.
RESERVE = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if total == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return total
"""


@contextmanager
def own_redis_server(tmp_path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of this test's own on 127.0.0.1:port, stopped at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        wait_for(probe.ping, timeout=10, what="redis-server to start")
        probe.close()
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_keys_are_prefixed_and_a_script_reserves_atomically(
    redis_url: str, redis_prefix: str
) -> None:
    # A generous timeout: a loaded machine must not turn this into a fallback.
    shared = SharedRedis(redis_url, prefix=redis_prefix, timeout=5)
    reserve = shared.script(RESERVE)
    key = shared.key("tokens", "key-1")
    assert key == f"{redis_prefix}:tokens:key-1"

    async def add(amount: int) -> int:
        return int(
            await shared.attempt(
                lambda _: script_call(reserve, [key], [amount, 60]), fallback=lambda: -1
            )
        )

    totals = await asyncio.gather(*(add(1) for _ in range(50)))
    assert sorted(totals) == list(range(1, 51))  # no two callers saw the same total
    assert 0 < await shared.client.ttl(key) <= 60
    await shared.close()


async def test_an_unreachable_redis_falls_back_or_refuses_as_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    opened = SharedRedis(nowhere, mode=FailureMode.OPEN)
    closed = SharedRedis(nowhere, mode=FailureMode.CLOSED)

    async def get(client: object) -> str:
        return str(await opened.client.get("x"))

    assert await opened.attempt(get, fallback=lambda: "local") == "local"
    with pytest.raises(RedisUnavailable):
        await closed.attempt(lambda client: client.get("x"), fallback=lambda: "local")
    # A cache whose record is elsewhere falls back whatever the mode.
    assert await closed.attempt(get, fallback=lambda: "db", fail_open=True) == "db"
    await opened.close()
    await closed.close()


@pytest.mark.parametrize(
    ("failures_at", "logged"),
    [
        ([0.0], [True]),
        ([0.0, 1.0, 59.0], [True, False, False]),
        ([0.0, 30.0, LOG_EVERY_SECONDS + 0.1], [True, False, True]),
    ],
)
def test_failures_are_logged_at_most_once_a_minute(
    failures_at: list[float], logged: list[bool]
) -> None:
    now = [0.0]
    failures = FailureLog(clock=lambda: now[0])
    seen = []
    for at in failures_at:
        now[0] = at
        seen.append(failures.failed(ConnectionError(), FailureMode.OPEN))
    assert seen == logged


def test_a_recovery_starts_the_minute_again() -> None:
    now = [0.0]
    failures = FailureLog(clock=lambda: now[0])
    assert failures.failed(ConnectionError(), FailureMode.OPEN)
    failures.succeeded()
    now[0] = 1.0
    assert failures.failed(ConnectionError(), FailureMode.OPEN)


async def test_redis_stopped_and_started_again_serves_from_the_fallback_meanwhile(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    shared = SharedRedis(f"redis://127.0.0.1:{port}/0", prefix="t")

    async def incr(client: object) -> int:
        return int(await shared.client.incr(shared.key("n")))

    with caplog.at_level(logging.INFO), own_redis_server(tmp_path, port):
        assert await shared.attempt(incr, fallback=lambda: -1) == 1
    # Stopped: fail-open serves the fallback, and says so once.
    assert [await shared.attempt(incr, fallback=lambda: -1) for _ in range(5)] == [-1] * 5
    assert shared.failures.failing
    with own_redis_server(tmp_path, port):
        # Started again (empty: it keeps nothing on disk): Redis serves again.
        assert await shared.attempt(incr, fallback=lambda: -1) == 1
        assert not shared.failures.failing
    await shared.close()


async def test_response_owners_go_through_redis_between_instances(
    redis_url: str, redis_prefix: str
) -> None:
    """Two instances with no database between them: what one made, the other finds;
    the database's copy goes with the usage batch (`later`)."""
    batched: list[tuple[str, str]] = []
    first = ResponseOwners(
        lambda *pair: batched.append(pair),
        None,
        redis=SharedRedis(redis_url, prefix=redis_prefix, timeout=5),
    )
    second = ResponseOwners(
        lambda *pair: None, None, redis=SharedRedis(redis_url, prefix=redis_prefix, timeout=5)
    )
    await first.remember("resp_1", "backend-a")
    assert await second.owner("resp_1") == "backend-a"
    assert await second.owner("resp_unknown") is None
    assert batched == [("resp_1", "backend-a")]
    for owners in (first, second):
        owners.close()
        assert owners.redis is not None
        await owners.redis.close()


async def test_response_owners_fall_back_to_the_database_when_redis_is_down(
    database: Database,
) -> None:
    with database.writing() as session:
        session.add(ModelServer(id="backend-a", endpoint_url="http://a.example"))
    batched: list[tuple[str, str]] = []
    down = SharedRedis(f"redis://127.0.0.1:{free_port()}/0", mode=FailureMode.CLOSED)
    owners = ResponseOwners(lambda *pair: batched.append(pair), database, redis=down)
    await owners.remember("resp_1", "backend-a")
    assert batched == []  # written to the database at once, as without Redis
    other = ResponseOwners(lambda *pair: None, database, redis=down)
    assert await other.owner("resp_1") == "backend-a"
    owners.close()
    other.close()
    await down.close()
