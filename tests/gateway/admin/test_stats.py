"""Pool statistics (#15 item 3): the window arithmetic as tables, then /admin/stats and
`gateway-admin stats` after known traffic through two real workers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.accounting.windows import (
    BUCKETS,
    Counts,
    Row,
    Server,
    bucket_of,
    intended_shares,
    percentile,
    summarize,
)
from tests.conftest import ADMIN_KEY
from tests.fakes import ScriptedBackend
from tests.gateway.proxy.test_proxy import CHAT, register, wait_routable
from tests.raw_backend import RawBackend, Write, http
from tests.support import BIN, GatewayProcess, ThreadedServer, process_settings, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}


def counts_at(*milliseconds: float) -> list[int]:
    counts = [0] * BUCKETS
    for value in milliseconds:
        counts[bucket_of(value)] += 1
    return counts


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ((), 0.5, None),
        ((30, 30, 30, 30), 0.5, 37.5),  # all in (25, 50]: linear inside the bucket
        ((5, 5, 5, 5000), 0.95, 4500.0),  # rank 3.8: 0.8 of the way into (2500, 5000]
        ((400_000,), 0.5, 300_000.0),  # the open bucket: its lower edge
    ],
)
def test_percentile(values: tuple[float, ...], fraction: float, expected: float | None) -> None:
    assert percentile(counts_at(*values), fraction) == expected


def server(
    server_id: str, *, weight: int = 1, priority: int = 0, health: str = "healthy"
) -> Server:
    return Server(server_id, "alice", health, None, weight, priority, ("m",))


@pytest.mark.parametrize(
    ("servers", "strategy", "expected"),
    [
        ((server("a", weight=1), server("b", weight=3)), "weighted", {"a": 0.25, "b": 0.75}),
        ((server("a", weight=1), server("b", weight=3)), "round_robin", {"a": 0.5, "b": 0.5}),
        ((server("a"), server("b", priority=1)), "round_robin", {"a": 1.0}),
        ((server("a", health="unhealthy"), server("b")), "least_loaded", {"b": 1.0}),
        ((), "weighted", {}),
    ],
)
def test_intended_shares(
    servers: tuple[Server, ...], strategy: str, expected: dict[str, float]
) -> None:
    assert intended_shares(servers, "m", strategy) == expected


def test_summarize_adds_rows_of_many_workers_and_minutes() -> None:
    def row(minute: int, backend: str, requests: int, failures: int = 0) -> Row:
        counts = Counts(
            requests, failures, 10 * requests, 2 * requests, counts_at(*[40] * requests)
        )
        return Row(minute, backend, "m", counts)

    rows = [row(100, "a", 3), row(100, "a", 1, failures=1), row(101, "b", 4), row(99, "a", 50)]
    servers = {"a": server("a"), "b": server("b")}
    summary = summarize(
        rows, servers, first_minute=100, minutes=2, strategy="round_robin", in_flight={"b": 2}
    )
    totals = summary["totals"]
    assert isinstance(totals, dict)
    assert (totals["requests"], totals["failures"], totals["success_rate"]) == (8, 1, 87.5)
    assert totals["prompt_tokens"] == 80
    backends = {b["registration_id"]: b for b in summary["backends"]}  # type: ignore[attr-defined]
    assert backends["b"]["in_flight"] == 2
    assert backends["a"]["shares"] == [{"model": "m", "share": 0.5, "intended_share": 0.5}]
    series = summary["series"]
    assert isinstance(series, dict)
    assert series["requests"] == [4, 4] and series["error_rate"] == [25.0, 0.0]
    assert series["models"] == {"m": [4, 4]}


def test_stats_after_traffic_through_two_workers(tmp_path: Path, database_url: str) -> None:
    settings = process_settings(
        tmp_path, database_url, WORKERS="2", RATE_LIMIT_PER_MINUTE="0", ROUTING_STRATEGY="weighted"
    )
    light, heavy = ScriptedBackend("m"), ScriptedBackend("m")
    with (
        ThreadedServer(light.app) as one,
        ThreadedServer(heavy.app) as three,
        GatewayProcess(tmp_path, settings) as gateway,
    ):
        ids = {}
        for server_url, weight, owner in ((one.url, 1, "alice"), (three.url, 3, "bob")):
            registered = httpx.post(
                f"{gateway.url}/admin/register",
                json={
                    "endpoint_url": server_url,
                    "weight": weight,
                    "metadata": {"student_id": owner},
                },
                headers=HEADERS,
                timeout=15,
            )
            ids[owner] = registered.json()["registration_id"]

        def both_routable() -> bool:
            data = httpx.get(f"{gateway.url}/v1/models").json()["data"]
            return bool(data) and data[0]["available_servers"] == 2

        wait_for(both_routable, what="both backends routable")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(40):
            assert httpx.post(f"{gateway.url}/v1/chat/completions", json=body).status_code == 200

        def settled() -> dict[str, object] | None:
            answer = httpx.get(f"{gateway.url}/admin/stats?window=5m", headers=HEADERS).json()
            return answer if answer["totals"]["requests"] == 40 else None

        stats = wait_for(settled, timeout=15, what="every worker's counts written")
        assert stats["models"]["m"]["requests"] == 40  # type: ignore[index]
        assert stats["totals"]["completion_tokens"] == 40 * 4  # type: ignore[index]
        backends = {b["registration_id"]: b for b in stats["backends"]}  # type: ignore[attr-defined]
        bob = backends[ids["bob"]]["shares"][0]
        assert bob["intended_share"] == 0.75 and 0.5 <= bob["share"] <= 0.95
        assert set(stats["owners"]) == {"alice", "bob"}  # type: ignore[arg-type]
        assert len(stats["series"]["requests"]) == 5  # type: ignore[index]

        bad = httpx.get(f"{gateway.url}/admin/stats?window=2d", headers=HEADERS)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "window"

        printed = subprocess.run(
            [str(BIN / "gateway-admin"), "stats", "--window", "5m", "--url", gateway.url,
             "--api-key", ADMIN_KEY],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout.startswith("window 5m: 40 requests") and "bob" in printed.stdout
        as_json = subprocess.run(
            [str(BIN / "gateway-admin"), "stats", "--json", "--url", gateway.url,
             "--api-key", ADMIN_KEY],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert json.loads(as_json.stdout)["window"] == "1h"


def test_a_failed_over_request_is_one_request_and_two_attempts(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    """What a client saw is the request; the failed try is the first backend's failure
    and an attempt of its own series, not a second request."""
    gateway = start_gateway(rate_limit_per_minute=0, slow_start_seconds=0)
    with (
        RawBackend(lambda seen: [Write(http(500, b'{"error":{"message":"down"}}'))]) as bad,
        RawBackend() as good,
    ):
        bad_id = register(gateway, "m", bad.url, priority=0)
        register(gateway, "m", good.url, priority=1)
        wait_routable(gateway, "m", 2)
        answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=15)
        assert answer.status_code == 200 and (bad.posts, good.posts) == (1, 1)

        def stats() -> dict[str, Any]:
            got: dict[str, Any] = httpx.get(
                f"{gateway.url}/admin/stats?window=5m", headers=HEADERS, timeout=10
            ).json()
            return got

        wait_for(lambda: stats()["totals"]["attempts"] == 2, what="the minute written")
        seen = stats()
        assert seen["totals"]["requests"] == 1 and seen["totals"]["failures"] == 0
        assert seen["models"]["m"]["requests"] == 1
        assert sum(seen["series"]["requests"]) == 1 and sum(seen["series"]["attempts"]) == 2
        row = next(b for b in seen["backends"] if b["registration_id"] == bad_id)
        assert (row["requests"], row["failures"], row["retried"]) == (1, 1, 1)
