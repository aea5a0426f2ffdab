"""`gateway-admin join` as a host expects it (#21 item 1), as real processes: every
option lands, status lines carry the time, the reason and the page, the token's
keeping is said once, a new endpoint URL re-attaches the same registration, and a
host that lost its token gets a new one from the admin."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.cli.demo_backend import create_demo_app
from tests.conftest import ADMIN_KEY
from tests.gateway.cli.test_join import CLASS_KEY, leased, pool, registrations
from tests.support import BIN, GatewayProcess, ThreadedServer, clean_environment, wait_for

__all__ = ["pool"]  # the fixture, shared with test_join
HEADERS = {"X-API-Key": ADMIN_KEY}
STAMP = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\] ", re.MULTILINE)


def start_join(config: Path, *arguments: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = config.parent / f"join-{len(list(config.parent.glob('join-*')))}.out"
    with out.open("wb") as stdout:
        agent = subprocess.Popen(
            [str(BIN / "gateway-admin"), "join", *arguments],
            env=clean_environment({"XDG_CONFIG_HOME": str(config)}),
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    return agent, out


def stop(agent: subprocess.Popen[bytes]) -> None:
    if agent.poll() is None:
        agent.send_signal(signal.SIGINT)
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=10)


def hook_app(received: list[bytes]) -> Starlette:
    async def hook(request: Request) -> Response:
        received.append(await request.body())
        return Response(status_code=204)

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


def test_join_with_every_option_then_from_a_new_endpoint(
    pool: tuple[GatewayProcess, ThreadedServer], tmp_path: Path
) -> None:
    gateway, backend = pool
    config = tmp_path / "config"
    received: list[bytes] = []
    with ThreadedServer(hook_app(received)) as hook:
        common = ["--gateway", gateway.url, "--model", "laptop-model"]
        agent, out = start_join(
            config, *common, "--endpoint", backend.url, "--key", CLASS_KEY,
            "--student-id", "alice", "--description", "my laptop", "--tag", "gpu",
            "--notify-url", f"{hook.url}/hook", "--notify-format", "slack",
            "--weight", "3", "--claim",
        )  # fmt: skip
        try:
            server = wait_for(lambda: leased(gateway), timeout=20, what="joined")
            assert server["metadata"] == {"student_id": "alice", "description": "my laptop"}
            assert server["tags"] == ["gpu"] and server["weight"] == 3
            assert server["notify_url"] == f"{hook.url}/hook"
            assert server["notify_format"] == "slack"
            assert server["owned_models"] == ["laptop-model"]
            page = f"{gateway.url}/servers/{server['registration_id']}"
            wait_for(lambda: "status: healthy" in out.read_text(), what="a status line")
        finally:
            stop(agent)
        first_output = out.read_text()
        assert f"joined as {server['registration_id']}; its page: {page}" in first_output
        assert first_output.count("management token is kept in") == 1
        assert all(STAMP.match(line) for line in first_output.splitlines()), first_output

        # The tunnel's URL changed: the kept token re-attaches the same registration there.
        with ThreadedServer(create_demo_app("laptop-model", chunk_interval_ms=0)) as moved:
            agent, out = start_join(config, *common, "--endpoint", moved.url)
            try:

                def moved_there() -> bool:
                    [again] = registrations(gateway)
                    assert again["registration_id"] == server["registration_id"]
                    return bool(again["endpoint_url"] == moved.url and again["is_active"])

                wait_for(moved_there, timeout=20, what="the same registration at the new URL")
                [again] = registrations(gateway)
                assert again["metadata"]["student_id"] == "alice"  # what it did not resend
                assert again["draining"] is False
            finally:
                stop(agent)
            assert "management token is kept in" not in out.read_text()  # said once


def test_a_status_line_says_why(
    pool: tuple[GatewayProcess, ThreadedServer], tmp_path: Path
) -> None:
    gateway, _ = pool
    config = tmp_path / "config"
    with ThreadedServer(create_demo_app("laptop-model", chunk_interval_ms=0)) as doomed:
        agent, out = start_join(
            config, "--gateway", gateway.url, "--endpoint", doomed.url, "--key", CLASS_KEY
        )
        try:
            wait_for(lambda: "status: healthy" in out.read_text(), timeout=20, what="healthy")
            doomed.__exit__(None, None, None)  # the model server stops; the agent runs on
            wait_for(
                lambda: "status: unhealthy: connection refused" in out.read_text(),
                timeout=20,
                what="the reason in a status line",
            )
        finally:
            stop(agent)


def test_the_admin_issues_a_new_token_and_join_takes_it(
    pool: tuple[GatewayProcess, ThreadedServer], tmp_path: Path
) -> None:
    gateway, backend = pool
    registered = httpx.post(
        f"{gateway.url}/admin/register",
        json={"endpoint_url": backend.url},
        headers={"X-API-Key": CLASS_KEY},
    )
    server_id, old = registered.json()["registration_id"], registered.json()["management_token"]
    again = httpx.post(
        f"{gateway.url}/admin/register",
        json={"endpoint_url": backend.url},
        headers={"X-API-Key": CLASS_KEY},
    )
    assert again.status_code == 409
    assert f"POST /admin/servers/{server_id}/token" in again.json()["error"]["message"]
    assert "--management-token" in again.json()["error"]["message"]

    own = f"{gateway.url}/admin/servers/{server_id}"
    for refused in ({"X-Management-Token": old}, {"X-API-Key": CLASS_KEY}):
        assert httpx.post(f"{own}/token", headers=refused).status_code == 403
    issued = httpx.post(f"{own}/token", headers=HEADERS)
    assert issued.status_code == 200, issued.text
    new = issued.json()["management_token"]
    assert new != old
    assert httpx.get(own, headers={"X-Management-Token": old}).status_code == 403
    assert httpx.get(own, headers={"X-Management-Token": new}).status_code == 200

    config = tmp_path / "config"
    agent, out = start_join(
        config, "--gateway", gateway.url, "--endpoint", backend.url, "--management-token", new
    )
    try:
        wait_for(lambda: leased(gateway), timeout=20, what="re-attached with the new token")
        assert [s["registration_id"] for s in registrations(gateway)] == [server_id]
    finally:
        stop(agent)
    assert new not in out.read_text()
