"""Hostile input and the gateway's own faults: clear answers, nothing lost, no way around
the address guard."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from gateway.cli.demo_backend import create_demo_app
from shared.db import Database, upgrade_to_head
from tests.databases import write_lock_held
from tests.gateway.proxy.test_proxy import CHAT, HEADERS, register, wait_routable
from tests.raw_backend import RawBackend
from tests.support import (
    BIN,
    ThreadedServer,
    clean_environment,
    free_port,
    process_settings,
    wait_for,
)

DEEP = b'{"model": "m", "messages": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/admin/register", "/admin/probe"])
def test_deeply_nested_json_is_a_400_not_a_500(
    start_gateway: Callable[..., ThreadedServer], tmp_path: Path, path: str
) -> None:
    gateway = start_gateway(rate_limit_per_minute=0)
    response = httpx.post(f"{gateway.url}{path}", content=DEEP, headers=HEADERS)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "the request body is nested too deeply"
    log = (tmp_path / "logs" / "gateway.log").read_text()
    assert "Traceback" not in log and "RecursionError" not in log


@pytest.mark.parametrize("path", ["/v1/chat/completions/", "/admin/servers/", "/v1/nothing"])
def test_trailing_slashes_and_unknown_routes_are_404_without_a_redirect(
    start_gateway: Callable[..., ThreadedServer], path: str
) -> None:
    gateway = start_gateway(rate_limit_per_minute=0)
    response = httpx.post(
        f"{gateway.url}{path}", json=CHAT, headers={**HEADERS, "Host": "evil.example"}
    )
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("key", ["clé-secrète-123", "two words", "line\nbreak", ""])
def test_a_backend_key_that_cannot_be_a_header_is_refused(
    start_gateway: Callable[..., ThreadedServer], key: str
) -> None:
    gateway = start_gateway(rate_limit_per_minute=0)
    with ThreadedServer(create_demo_app("m")) as backend:
        response = httpx.post(
            f"{gateway.url}/admin/register",
            json={"model_name": "m", "endpoint_url": backend.url, "api_key": key},
            headers=HEADERS,
        )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "printable ASCII" in message
    for part in key.split():
        assert part not in message or part in ("",)


def test_a_name_rebound_between_check_and_probe_is_refused(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    """DNS rebinding at registration: the check sees a public address, the next look-up
    a loopback one. The probe connects only to an address it checked itself, so it
    refuses, and the loopback service's model list is never shown."""
    with ThreadedServer(create_demo_app("internal-model")) as internal:
        answers: list[str] = []

        async def rebinding(host: str, port: int) -> list[str]:
            return [answers.pop(0) if answers else "127.0.0.1"]

        gateway = start_gateway(resolver=rebinding, allow_private_backends=False)
        url = f"http://rebind.test:{internal.port}"
        for path, body in (
            ("/admin/probe", {"endpoint_url": url}),
            ("/admin/register", {"model_name": "m", "endpoint_url": url}),
        ):
            answers[:] = ["93.184.216.34"]  # for the check; every later look-up: loopback
            response = httpx.post(f"{gateway.url}{path}", json=body, headers=HEADERS)
            assert response.status_code in (400, 503), response.text
            message = response.json()["error"]["message"]
            assert "loopback" in message and "internal-model" not in message
            assert "127.0.0.1" not in message


@pytest.mark.sqlite_only("PostgreSQL's JSON columns refuse the broken value this test plants")
def test_after_a_500_the_connection_stays_usable(
    start_gateway: Callable[..., ThreadedServer], database: Database, database_url: str
) -> None:
    """A bug (here: a row the code cannot read) is an OpenAI-shaped 500, logged once, and
    the client's keep-alive connection carries its next request."""
    gateway = start_gateway(rate_limit_per_minute=0)
    with ThreadedServer(create_demo_app("m")) as backend:
        server_id = register(gateway, "m", backend.url)
    path = database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE model_servers SET tags = '{not json' WHERE id = ?", (server_id,))
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.request("GET", "/admin/servers", headers=HEADERS)
    broken = connection.getresponse()
    body = json.loads(broken.read())
    assert broken.status == 500 and body["error"]["type"] == "server_error"
    assert broken.getheader("connection") != "close"
    connection.request("GET", "/health")
    follow_up = connection.getresponse()
    assert follow_up.status == 200 and json.loads(follow_up.read())["status"] == "ok"
    connection.close()


def register_at(gateway_url: str, backend_url: str) -> httpx.Response:
    return httpx.post(
        f"{gateway_url}/admin/register",
        json={"model_name": "m", "endpoint_url": backend_url},
        headers=HEADERS,
        timeout=30,
    )


def test_a_locked_database_answers_503_and_writes_nothing(
    start_gateway: Callable[..., ThreadedServer], database_url: str
) -> None:
    gateway = start_gateway(rate_limit_per_minute=0)
    with ThreadedServer(create_demo_app("m")) as backend:
        with write_lock_held(database_url):  # a backup, a long admin query
            health = httpx.get(f"{gateway.url}/health").json()
            assert health["database_read"] == "ok" and health["database_write"] == "failing"
            response = register_at(gateway.url, backend.url)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert "busy" in response.json()["error"]["message"]
        servers = httpx.get(f"{gateway.url}/admin/servers", headers=HEADERS).json()
        assert servers == []  # it did not happen
        assert register_at(gateway.url, backend.url).status_code == 201
    assert httpx.get(f"{gateway.url}/health").json()["database_write"] == "ok"


def test_ready_when_the_snapshot_is_fresh(start_gateway: Callable[..., ThreadedServer]) -> None:
    gateway = start_gateway(rate_limit_per_minute=0)
    response = httpx.get(f"{gateway.url}/health/ready")
    assert response.status_code == 200 and response.json() == {"status": "ready"}


def run_gateway(settings: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "gateway")],
        env=clean_environment({**settings, "PORT": str(free_port())}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("url_of", "says"),
    [
        (lambda path: f"sqlite:///file:{path}?mode=ro&uri=true", "cannot use the database"),
        (lambda path: "mysql://user:pw-secret@db.example/gw", "use SQLite"),
        (lambda path: f"sqlite:///{path}.missing", "no schema yet"),
        (
            lambda path: f"postgresql://user:pw-secret@127.0.0.1:{free_port()}/gw",
            "cannot reach the database",
        ),
    ],
    ids=["read-only", "another engine", "never migrated", "postgresql unreachable"],
)
def test_startup_failures_are_one_or_two_lines_and_exit_2(
    tmp_path: Path, url_of: Callable[[str], str], says: str
) -> None:
    path = str(tmp_path / "registry.db")
    upgrade_to_head(f"sqlite:///{path}")
    settings = process_settings(tmp_path, url_of(path))
    finished = run_gateway(settings, tmp_path)
    assert finished.returncode == 2, finished.stderr
    lines = finished.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and says in finished.stderr
    assert "pw-secret" not in finished.stderr and "Traceback" not in finished.stderr


def can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
        capture_output=True,
        timeout=10,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs root and unshare --mount for a tmpfs")
def test_a_full_log_disk_changes_no_answer(tmp_path: Path, database_url: str) -> None:
    """The log folder is a full tmpfs (in a private mount namespace): registrations and
    requests keep their true status and shape, and stderr gets a report a minute, not
    a traceback per entry."""
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    settings = process_settings(tmp_path, database_url, RATE_LIMIT_PER_MINUTE="0")
    env = clean_environment({**settings, "HOST": "127.0.0.1", "PORT": str(port)})
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {logs} && "
        f"(dd if=/dev/zero of={logs}/filler bs=4k count=1000 2>/dev/null; true) && "
        f"exec {BIN / 'gateway'}"
    )
    output = tmp_path / "gateway.output"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["unshare", "--mount", "sh", "-c", script], env=env, stdout=sink, stderr=sink
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: httpx.get(f"{url}/health").status_code == 200, timeout=30)
            with ThreadedServer(create_demo_app("m")) as backend:
                registered = register_at(url, backend.url)
                assert registered.status_code == 201, registered.text
                assert registered.json()["health_status"] == "healthy"
                for _ in range(50):
                    answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=30)
                    assert answer.status_code == 200 and answer.json()["choices"]
        finally:
            process.terminate()
            process.wait(timeout=30)
    printed = output.read_text(errors="replace")
    assert "--- Logging error ---" not in printed and "Traceback" not in printed
    assert 1 <= printed.count("logging failed") <= 3


def test_not_ready_while_the_registry_cannot_be_read(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    """Readiness says why; the watcher keeps trying, and readiness returns with it."""
    gateway = start_gateway(rate_limit_per_minute=0)
    with database.engine.begin() as raw:
        raw.execute(text("ALTER TABLE registry_generation RENAME TO registry_generation_away"))
    try:
        response = httpx.get(f"{gateway.url}/health/ready")
        assert response.status_code == 503
        assert "the database cannot be read" in response.json()["error"]["message"]
    finally:
        with database.engine.begin() as raw:
            raw.execute(text("ALTER TABLE registry_generation_away RENAME TO registry_generation"))
    wait_for(lambda: httpx.get(f"{gateway.url}/health/ready").status_code == 200, timeout=15)


@pytest.mark.parametrize(
    ("sent", "status", "received"),
    [
        # Valid JSON with a leading space: renamed in place, the space kept.
        (b' {"model": "chat", "messages": []}', 200, b' {"model": "real", "messages": []}'),
        # A lone surrogate is valid JSON: forwarded as the client wrote it.
        (
            b'{"model": "chat", "messages": "\\ud800", "n": 1e999}',
            200,
            b'{"model": "real", "messages": "\\ud800", "n": 1e999}',
        ),
        # A value the gateway looks up must be encodable text: a clear 400.
        (b'{"model": "chat", "input": "x", "previous_response_id": "\\udc00"}', 400, None),
        (b'{"model": "ch\\udc00at"}', 400, None),
    ],
    ids=["leading space", "lone surrogate forwarded", "surrogate id", "surrogate model"],
)
def test_valid_json_is_renamed_in_place_and_never_a_500(
    start_gateway: Callable[..., ThreadedServer],
    tmp_path: Path,
    sent: bytes,
    status: int,
    received: bytes | None,
) -> None:
    """#19 item 1: a body for a model with `backend_model` is renamed by splicing the
    model's value into the client's bytes (it was re-encoded: a leading space was a 400,
    a lone surrogate a 500). Through a real gateway, to a backend that records."""
    gateway = start_gateway(rate_limit_per_minute=0)
    with RawBackend(model="real") as backend:
        register(gateway, "chat", backend.url, backend_model="real")
        wait_routable(gateway, "chat", 1)
        for path in ("/v1/chat/completions", "/v1/responses"):
            answer = httpx.post(f"{gateway.url}{path}", content=sent, timeout=15)
            assert answer.status_code == status, answer.text
            if received is None:
                error = answer.json()["error"]
                assert error["type"] == "invalid_request_error" and "surrogate" in error["message"]
                assert backend.posts == 0
            else:
                assert backend.requests[-1].body == received
    log = (tmp_path / "logs" / "gateway.log").read_text()
    assert "Traceback" not in log
