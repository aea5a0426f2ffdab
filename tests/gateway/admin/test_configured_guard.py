"""The address guard's exemption belongs to the configured servers alone (#19 item 6).

UPSTREAM (and BACKENDS) name servers the operator runs, often on this very
machine: those origins are dialled whatever their address. Everything else
(registrations, leases, `/admin/probe`, a `notify_url`) still follows
ALLOW_PRIVATE_BACKENDS, which UPSTREAM used to turn on for all of them.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx

from gateway.cli.demo_backend import create_demo_app
from shared.failures import FailureKind
from shared.upstream import ConnectFailed, UpstreamPool, UpstreamRequest
from tests.fakes import CountingApp
from tests.gateway.admin.test_configured import answers_as_the_upstream
from tests.support import ADMIN_KEY, GatewayProcess, ThreadedServer, process_settings, start_healthd

HEADERS = {"X-API-Key": ADMIN_KEY}


def refused_by_the_guard(response: httpx.Response, param: str, problem: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert problem in error["message"] and "address guard" in error["message"], error
    assert "ALLOW_PRIVATE_BACKENDS" in error["message"]


def test_upstream_is_exempt_and_nothing_else(tmp_path: Path, database_url: str) -> None:
    """A real gateway and healthd with UPSTREAM on loopback, ALLOW_PRIVATE_BACKENDS unset:
    the upstream answers through the gateway; another loopback server, a loopback
    notify_url and the metadata address are refused with 400, and never contacted."""
    other = CountingApp(create_demo_app("other", chunk_interval_ms=0))
    with (
        ThreadedServer(create_demo_app("tiny", chunk_interval_ms=0)) as upstream,
        ThreadedServer(other) as elsewhere,
    ):
        settings = process_settings(
            tmp_path, database_url, UPSTREAM=upstream.url, HEALTH_CHECK_INTERVAL_SECONDS="1"
        )
        del settings["ALLOW_PRIVATE_BACKENDS"]
        with GatewayProcess(tmp_path, settings) as gateway:
            healthd = start_healthd(tmp_path, settings)
            try:
                answers_as_the_upstream(gateway)

                def admin(path: str, body: dict[str, Any]) -> httpx.Response:
                    return httpx.post(f"{gateway.url}/admin{path}", json=body, headers=HEADERS)

                refused_by_the_guard(
                    admin("/register", {"endpoint_url": elsewhere.url}),
                    "endpoint_url",
                    "loopback address",
                )
                refused_by_the_guard(
                    admin("/probe", {"endpoint_url": elsewhere.url}),
                    "endpoint_url",
                    "loopback address",
                )
                hook = {"endpoint_url": elsewhere.url, "notify_url": f"{upstream.url}/hook"}
                refused_by_the_guard(admin("/register", hook), "notify_url", "loopback address")
                refused_by_the_guard(
                    admin("/probe", {"endpoint_url": "http://169.254.169.254"}),
                    "endpoint_url",
                    "cloud metadata address",
                )
                assert other.requests == 0
            finally:
                healthd.send_signal(signal.SIGTERM)
                assert healthd.wait(timeout=20) == 0


async def every_name_is_loopback(host: str, port: int) -> list[str]:
    """A resolver for made-up names (no DNS look-up leaves the machine)."""
    return ["127.0.0.1"]


async def test_the_dialers_exemption_is_per_origin() -> None:
    """The proxy dials at request time too: only the exempt host and port skip the guard."""
    with ThreadedServer(create_demo_app("tiny", chunk_interval_ms=0)) as backend:
        pool = UpstreamPool(
            verify_tls=True,
            connect_timeout=2.0,
            resolver=every_name_is_loopback,
            allow_private=False,
            exempt=frozenset({("configured.test", backend.port)}),
        )
        try:
            exempt = UpstreamRequest(
                f"http://configured.test:{backend.port}", "/v1/models", {}, method="GET"
            )
            loop = asyncio.get_running_loop()
            async with pool.stream(exempt, loop.time() + 5) as response:
                assert response.status == 200
            for url in (f"http://other.test:{backend.port}", "http://configured.test:1"):
                request = UpstreamRequest(url, "/v1/models", {}, method="GET")
                try:
                    async with pool.stream(request, loop.time() + 5):
                        raise AssertionError(f"{url} was dialled")
                except ConnectFailed as failure:
                    assert failure.kind is FailureKind.ADDRESS_REFUSED
        finally:
            pool.close()
