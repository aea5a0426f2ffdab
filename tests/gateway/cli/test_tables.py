"""What a person reads from `gateway-admin` (#19 item 26): tables and words, never
Python reprs; every column `servers` promises; backends named by more than a UUID.
Through click's CliRunner against a real gateway (uvicorn on a loopback port)."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from click.testing import CliRunner

from gateway.cli.admin import cli
from gateway.cli.demo_backend import create_demo_app
from tests.conftest import ADMIN_KEY
from tests.fakes import ScriptedBackend
from tests.support import REPO, ThreadedServer, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}
REPR = re.compile(r"[\[\]{}]|\bNone\b|\bTrue\b|\bFalse\b|'")


@pytest.fixture
def gateway(start_gateway: Callable[..., ThreadedServer]) -> ThreadedServer:
    return start_gateway(rate_limit_per_minute=0, slow_start_seconds=0)


def run(gateway: ThreadedServer, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--url", gateway.url, "--api-key", ADMIN_KEY])
    assert result.exit_code == 0, result.output
    return result.output


def register(gateway: ThreadedServer, backend: ThreadedServer, **fields: object) -> str:
    answer = httpx.post(
        f"{gateway.url}/admin/register",
        json={"endpoint_url": backend.url, **fields},
        headers=HEADERS,
        timeout=15,
    )
    assert answer.status_code == 201, answer.text
    registration_id: str = answer.json()["registration_id"]
    return registration_id


def fields_of(text: str) -> dict[str, str]:
    """`label  value` lines (two spaces or more between them) as a dict."""
    pairs = (re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


def test_show_and_update_print_words_not_reprs(gateway: ThreadedServer) -> None:
    with ThreadedServer(create_demo_app("tiny", chunk_interval_ms=0)) as backend:
        registration_id = register(
            gateway,
            backend,
            model_name="tiny",
            tags=["gpu", "vision"],
            api_key="backend-secret-123",
            metadata={"student_id": "alice", "description": "my laptop"},
        )
        shown = run(gateway, "show", registration_id)
        updated = run(gateway, "update", registration_id, "--priority", "3", "--weight", "5")
    for output in (shown, updated):
        assert not REPR.search(output), output
        assert "backend-secret-123" not in output
    details = fields_of(shown)
    assert details["serves"] == "tiny"
    assert details["tags"] == "gpu, vision"
    assert details["status"].startswith("healthy since ")
    assert details["backend key"] == "set (hidden)"
    assert details["requests"].startswith("0 (0 failed), tokens 0 in / 0 out")
    assert details["description"] == "my laptop"
    assert "recent health checks, newest first:\nCHECKED_AT" in shown
    assert fields_of(updated)["priority / weight"] == "3 / 5"


SERVER_HEADER = ["REGISTRATION_ID", "MODELS", "STATUS", "ACTIVE", "PRIORITY", "WEIGHT",
                 "TAGS", "SOURCE", "IN_FLIGHT", "ENDPOINT_URL", "OWNER"]  # fmt: skip


def test_servers_shows_every_column_and_a_deregistered_server_as_such(
    gateway: ThreadedServer,
) -> None:
    stalling = ScriptedBackend("m", "stall_mid_stream")
    with (
        ThreadedServer(stalling.app) as busy,
        ThreadedServer(create_demo_app("m", chunk_interval_ms=0)) as gone,
    ):
        busy_id = register(gateway, busy, tags=["gpu"], priority=2, weight=5,
                           metadata={"student_id": "alice"})  # fmt: skip
        gone_id = register(gateway, gone)
        run(gateway, "deregister", gone_id)
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        tables: list[str] = []

        def busy_counted() -> bool:  # (in flight is handed over once a second)
            tables.append(run(gateway, "servers", "--all"))
            return any(
                line.split()[0] == busy_id and line.split()[9] == "1"
                for line in tables[-1].strip().splitlines()[1:]
            )

        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body) as stream:
            # The first events came; the backend stalls after them. The iterator is kept:
            # collected, it would close the stream (when depends on the collector's timing).
            chunks = stream.iter_raw()
            next(chunks)
            wait_for(busy_counted, timeout=10, what="the stream counted in flight")
    header, *lines = tables[-1].strip().splitlines()
    assert header.split() == SERVER_HEADER
    rows = {line.split()[0]: line.split() for line in lines}
    assert rows[busy_id][1:] == ["*:", "m", "healthy", "yes", "2", "5", "gpu", "api", "1",
                                 busy.url, "alice"]  # fmt: skip
    assert rows[gone_id][3:] == ["deregistered", "no", "0", "1", "-", "api", "0", gone.url, "-"]


def test_stats_names_backends_by_host_and_description_with_shares_in_percent(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    # Round robin: the shares are even (`auto` keeps one conversation on one server).
    gateway = start_gateway(
        rate_limit_per_minute=0, slow_start_seconds=0, routing_strategy="round_robin"
    )
    with (
        ThreadedServer(create_demo_app("m", chunk_interval_ms=0)) as one,
        ThreadedServer(create_demo_app("m", chunk_interval_ms=0)) as two,
    ):
        first = register(gateway, one, metadata={"description": "lab box"})
        second = register(gateway, two)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(4):
            assert httpx.post(f"{gateway.url}/v1/chat/completions", json=body).status_code == 200

        def written() -> bool:
            stats = httpx.get(f"{gateway.url}/admin/stats?window=5m", headers=HEADERS).json()
            return bool(stats["totals"]["requests"] == 4)

        wait_for(written, what="the requests written to usage_minutes")
        printed = run(gateway, "stats", "--window", "5m")
    host_one, host_two = one.url.removeprefix("http://"), two.url.removeprefix("http://")
    assert f"{first[:8]} {host_one} (lab box)" in printed
    assert f"{second[:8]} {host_two}" in printed
    assert first not in printed  # the short id, beside what a person recognises
    assert printed.count("m 50%/50%") == 2


def test_the_readme_shows_the_servers_table_as_printed() -> None:
    readme = (REPO / "README.md").read_text()
    shown = re.search(r"```\n\$ gateway-admin servers[^\n]*\n(.*?)\n```", readme, re.DOTALL)
    assert shown, "the README shows an example of `gateway-admin servers`"
    header, *rows = shown.group(1).splitlines()
    assert header.split() == SERVER_HEADER
    assert rows and all(len(row.split()) >= len(SERVER_HEADER) for row in rows)
