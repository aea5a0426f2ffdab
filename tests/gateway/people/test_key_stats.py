"""Client keys in the pool statistics: the per-key arithmetic as a table, then
/admin/stats (the `keys` breakdown, the `owner` filter over clients and hosts, the `key`
filter) and `gateway-admin stats --by key` on usage rows as the request path writes them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.accounting.key_windows import KeyInfo, KeyRow, summarize_keys
from gateway.accounting.windows import BUCKETS, Counts, bucket_of
from shared.db import Database
from shared.models import KeyUsageMinute
from tests.conftest import ADMIN_KEY
from tests.gateway.cli.test_admin_cli import admin
from tests.support import ThreadedServer

HEADERS = {"X-API-Key": ADMIN_KEY}
KEYS = {
    "k1": KeyInfo("k1", "laptop", "alice", "cs101", "mvk_aaaa"),
    "k2": KeyInfo("k2", "colab", "alice", None, "mvk_bbbb"),
    "k3": KeyInfo("k3", "lab", "bob", "cs101", "mvk_cccc", revoked=True),
}


def latency(*milliseconds: float) -> list[int]:
    counts = [0] * BUCKETS
    for value in milliseconds:
        counts[bucket_of(value)] += 1
    return counts


def row(
    minute: int,
    key: str,
    requests: int,
    *,
    failures: int = 0,
    tokens: tuple[int, int] = (0, 0),
    ms: float = 30,
    model: str = "demo",
) -> KeyRow:
    return KeyRow(
        minute, key, model, Counts(requests, failures, *tokens, latency(*[ms] * requests))
    )


ROWS = [
    row(100, "k1", 2, tokens=(20, 10)),
    row(101, "k1", 1, failures=1, ms=3000),
    row(101, "k3", 4, tokens=(40, 4), model="tiny"),
    row(90, "k2", 9),  # before the window
]


@pytest.mark.parametrize(
    ("counted", "always", "expected_rows", "expected_totals"),
    [
        (None, (), [("k3", 4, 0, 44), ("k1", 3, 1, 30)], (7, 1, 74)),
        ({"k1", "k2"}, ("k1", "k2"), [("k1", 3, 1, 30), ("k2", 0, 0, 0)], (3, 1, 30)),
        ({"k3"}, ("k3",), [("k3", 4, 0, 44)], (4, 0, 44)),
    ],
)
def test_keys_are_summed_per_key_and_in_all(
    counted: set[str] | None,
    always: tuple[str, ...],
    expected_rows: list[tuple[str, int, int, int]],
    expected_totals: tuple[int, int, int],
) -> None:
    extra: dict[str, Any] = {} if counted is None else {"counted": counted.__contains__}
    summary: Any = summarize_keys(
        ROWS,
        KEYS,
        first_minute=100,
        minutes=3,
        always=always,
        series_per_key=counted is not None,
        **extra,
    )
    figures = [
        (k["id"], k["requests"], k["failures"], k["prompt_tokens"] + k["completion_tokens"])
        for k in summary["keys"]
    ]
    assert figures == expected_rows
    totals = summary["clients"]["totals"]
    assert (
        totals["requests"],
        totals["failures"],
        totals["prompt_tokens"] + totals["completion_tokens"],
    ) == expected_totals
    assert len(summary["clients"]["series"]["requests"]) == 3
    assert all(("series" in k) is (counted is not None) for k in summary["keys"])


def test_a_keys_figures_carry_its_names_latency_and_series() -> None:
    summary: Any = summarize_keys(
        ROWS, KEYS, first_minute=100, minutes=3, counted={"k1"}.__contains__, series_per_key=True
    )
    (k1,) = summary["keys"]
    assert (k1["name"], k1["owner"], k1["group"], k1["prefix"]) == (
        "laptop",
        "alice",
        "cs101",
        "mvk_aaaa",
    )
    assert (
        k1["success_rate"] == pytest.approx(66.67) and k1["latency_p50_ms"] == 43.8
    )  # rank 1.5 of 3, in (25, 50]
    assert k1["latency_p95_ms"] > 2500
    assert k1["series"] == {"requests": [2, 1, 0], "tokens": [30, 0, 0]}
    series = summary["clients"]["series"]
    assert series["error_rate"] == [0.0, 100.0, None] and series["models"] == {"demo": [2, 1, 0]}


def make_key(gateway: ThreadedServer, name: str, owner: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{gateway.url}/admin/keys", json={"name": name, "owner": owner}, headers=HEADERS
    )
    assert answer.status_code == 201, answer.text
    key: dict[str, Any] = answer.json()
    return key


def test_stats_break_usage_down_by_key_and_by_owner(
    start_gateway: Callable[..., ThreadedServer], database: Database, tmp_path: Path
) -> None:
    gateway = start_gateway()
    alice = make_key(gateway, "laptop", "alice")
    idle = make_key(gateway, "spare", "alice")
    bob = make_key(gateway, "lab", "bob")
    minute = int(time.time()) // 60
    with database.writing() as session:
        for key, requests, prompt, completion in ((alice, 3, 30, 12), (bob, 5, 50, 20)):
            session.add(
                KeyUsageMinute(
                    minute=minute,
                    key_id=key["id"],
                    model="demo",
                    requests=requests,
                    failures=1,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    latency_counts=latency(*[40] * requests),
                )
            )
    stats = httpx.get(f"{gateway.url}/admin/stats", params={"window": "5m"}, headers=HEADERS).json()
    assert [(k["owner"], k["requests"]) for k in stats["keys"]] == [("bob", 5), ("alice", 3)]
    assert stats["clients"]["totals"]["requests"] == 8
    assert stats["clients"]["totals"]["prompt_tokens"] == 80
    assert stats["clients"]["series"]["requests"][-1] == 8
    assert stats["hosts"]["totals"] == stats["totals"]  # the servers' side, as before

    mine = httpx.get(
        f"{gateway.url}/admin/stats", params={"window": "5m", "owner": "alice"}, headers=HEADERS
    ).json()
    assert [(k["name"], k["requests"]) for k in mine["keys"]] == [("laptop", 3), ("spare", 0)]
    assert mine["clients"]["totals"]["completion_tokens"] == 12
    assert mine["keys"][0]["series"]["tokens"][-1] == 42
    assert mine["hosts"]["servers"] == 0

    one = httpx.get(
        f"{gateway.url}/admin/stats", params={"window": "1h", "key": idle["id"]}, headers=HEADERS
    ).json()
    assert [k["id"] for k in one["keys"]] == [idle["id"]] and one["clients"]["totals"][
        "requests"
    ] == 0
    missing = httpx.get(f"{gateway.url}/admin/stats", params={"key": "nope"}, headers=HEADERS)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "key"
    for answer in (stats, mine):
        assert alice["key"] not in str(answer) and bob["key"] not in str(answer)

    by_key = admin(
        "stats",
        "--by",
        "key",
        "--window",
        "5m",
        "--url",
        gateway.url,
        "--api-key",
        ADMIN_KEY,
        cwd=tmp_path,
    )
    assert by_key.returncode == 0, by_key.stderr
    lines = by_key.stdout.splitlines()
    assert lines[0].startswith("window 5m: clients 8 requests")
    assert "KEY" in lines[2] and "bob" in lines[3] and alice["prefix"] in lines[4]
    assert alice["key"] not in by_key.stdout
