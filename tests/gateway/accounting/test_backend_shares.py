"""Load-balancing effectiveness (#19 item 26): each backend's share of its model's
requests against the intended one, as a table, and as gauges on /metrics after
real traffic through a real gateway."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.accounting.usage_window import endpoint_host
from gateway.accounting.windows import Server, Share, backend_shares
from gateway.cli.demo_backend import create_demo_app
from tests.conftest import ADMIN_KEY
from tests.support import ThreadedServer, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}


def server(
    server_id: str, *, weight: int = 1, health: str = "healthy", draining: bool = False
) -> Server:
    return Server(server_id, None, health, None, weight, 0, ("m",), draining=draining)


A, B, C = server("a"), server("b", weight=3), server("c")
GONE = server("gone", health="deregistered")
DRAINING = server("draining", draining=True)


@pytest.mark.parametrize(
    ("served", "servers", "strategy", "expected"),
    [
        # Even under round robin; each got what it was meant to.
        ({("m", "a"): 5, ("m", "b"): 5}, (A, B), "round_robin",
         [Share("a", "m", 0.5, 0.5), Share("b", "m", 0.5, 0.5)]),
        # By weight; one meant to get a share that got nothing shows 0.
        ({("m", "a"): 4}, (A, B), "weighted",
         [Share("a", "m", 1.0, 0.25), Share("b", "m", 0.0, 0.75)]),
        # A deregistered backend that served is shown, meant to get nothing.
        ({("m", "gone"): 1, ("m", "c"): 3}, (C, GONE), "round_robin",
         [Share("c", "m", 0.75, 1.0), Share("gone", "m", 0.25, 0.0)]),
        # A draining backend is meant to get nothing new; what it finished still counts.
        ({("m", "a"): 3, ("m", "draining"): 1}, (A, DRAINING), "round_robin",
         [Share("a", "m", 0.75, 1.0), Share("draining", "m", 0.25, 0.0)]),
        # A model nobody asked for has no share.
        ({}, (A, B), "round_robin", []),
    ],
)  # fmt: skip
def test_backend_shares(
    served: dict[tuple[str, str], int],
    servers: tuple[Server, ...],
    strategy: str,
    expected: list[Share],
) -> None:
    assert backend_shares(served, {s.id: s for s in servers}, strategy) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://10.0.0.5:11434", "10.0.0.5:11434"),
        ("https://user:secret@abc.ngrok.io/v1?key=hidden", "abc.ngrok.io"),
        ("http://[::1]:8000/", "[::1]:8000"),
    ],
)
def test_endpoint_host_never_shows_userinfo_path_or_query(url: str, expected: str) -> None:
    assert endpoint_host(url) == expected


def gauges(text: str, name: str) -> dict[str, float]:
    return {
        sample.labels["backend"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels["model"] == "m"
    }


def test_metrics_show_each_backends_share_against_the_intended_one(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    # Round robin: four requests, two each (`auto` would keep one conversation on one).
    gateway = start_gateway(
        rate_limit_per_minute=0, slow_start_seconds=0, routing_strategy="round_robin"
    )
    with (
        ThreadedServer(create_demo_app("m", chunk_interval_ms=0)) as one,
        ThreadedServer(create_demo_app("m", chunk_interval_ms=0)) as two,
        ThreadedServer(create_demo_app("m", chunk_interval_ms=0)) as late,
    ):
        ids = [
            httpx.post(
                f"{gateway.url}/admin/register",
                json={"endpoint_url": backend.url},
                headers=HEADERS,
                timeout=15,
            ).json()["registration_id"]
            for backend in (one, two)
        ]
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(4):
            assert httpx.post(f"{gateway.url}/v1/chat/completions", json=body).status_code == 200

        def written() -> bool:
            stats = httpx.get(f"{gateway.url}/admin/stats?window=5m", headers=HEADERS).json()
            return bool(stats["totals"]["requests"] == 4)

        wait_for(written, what="the requests written to usage_minutes")
        # A third backend, healthy and meant to get a third, that has not had one yet.
        third = httpx.post(
            f"{gateway.url}/admin/register", json={"endpoint_url": late.url}, headers=HEADERS
        ).json()["registration_id"]
        text = httpx.get(f"{gateway.url}/metrics").text
    assert gauges(text, "gateway_backend_share") == {ids[0]: 0.5, ids[1]: 0.5, third: 0.0}
    intended = gauges(text, "gateway_backend_intended_share")
    assert intended == {backend: pytest.approx(1 / 3, abs=1e-4) for backend in (*ids, third)}
