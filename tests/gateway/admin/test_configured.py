"""Servers from configuration (#13 item 6): BACKENDS, BACKENDS_FILE and UPSTREAM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select

from gateway.admin.configured import (
    ConfigurationError,
    configured_backends,
    read_backends_file,
    sync_configured,
)
from gateway.admin.registrations import update_registration
from gateway.admin.schemas import RegisterRequest, UpdateRequest
from gateway.cli.demo_backend import create_demo_app
from shared.db import Database
from shared.errors import Conflict
from shared.models import ModelServer
from shared.settings import Settings
from tests.healthd.test_daemon import until
from tests.support import (
    BIN,
    GatewayProcess,
    ThreadedServer,
    clean_environment,
    process_settings,
    start_healthd,
)

POOL = """
[[backend]]
endpoint_url = "http://127.0.0.1:9101"
tags = ["gpu"]
priority = 1
metadata = { student_id = "lab" }

[[backend]]
model_name = "chat"
backend_model = "/models/llama"
endpoint_url = "http://127.0.0.1:9102/v1"
api_key = "file-secret"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backends.toml"
    path.write_text(text)
    return path


def test_the_configuration_is_read_with_the_api_fields(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        backends=["http://127.0.0.1:9100"],
        upstream="http://127.0.0.1:9103",
        backends_file=str(write(tmp_path, POOL)),
    )
    entries = configured_backends(settings)
    assert [(e.endpoint_url, e.model_name) for e in entries] == [
        ("http://127.0.0.1:9100", None),
        ("http://127.0.0.1:9103", None),
        ("http://127.0.0.1:9101", None),
        ("http://127.0.0.1:9102", "chat"),  # the trailing /v1 removed, as the API does
    ]
    assert entries[2].tags == ["gpu"] and entries[2].metadata.student_id == "lab"
    assert entries[3].backend_model == "/models/llama"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[backend]]\nendpoint_url = 'ftp://x'\n", "backend 1: endpoint_url"),
        ("[[backend]]\nendpoint_url = 'http://a'\nweight = 0\n", "backend 1: weight"),
        ("[[backend]]\nendpoint_url = 'http://a'\ncolour = 'red'\n", "colour"),
        ("[[backend]]\nmodel_name = 'x'\n", "endpoint_url"),
        ("[backends]\n", "unknown top-level key(s) backends"),
        ("backend = 3\n", "[[backend]] table"),
        ("[[backend]\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_entry(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        read_backends_file(write(tmp_path, text))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def rows(database: Database) -> list[ModelServer]:
    with database.reading() as session:
        return list(session.scalars(select(ModelServer).order_by(ModelServer.endpoint_url)))


def test_sync_is_idempotent_and_deactivates_what_was_removed(database: Database) -> None:
    one = RegisterRequest(endpoint_url="http://127.0.0.1:9101")
    two = RegisterRequest(endpoint_url="http://127.0.0.1:9102", model_name="m", weight=2)
    first = sync_configured(database, [one, two])
    assert len(first.registered) == 2 and not first.deactivated
    ids = [row.id for row in rows(database)]

    again = sync_configured(database, [one, two.model_copy(update={"weight": 5})])
    assert not again.registered and sorted(again.updated) == sorted(ids)
    assert [row.weight for row in rows(database)] == [1, 5]
    assert all(row.source == "config" and row.is_active for row in rows(database))

    removed = sync_configured(database, [one])
    assert removed.deactivated == [ids[1]]
    assert [row.is_active for row in rows(database)] == [True, False]

    back = sync_configured(database, [one, two])
    assert not back.registered  # the same registration, active again
    assert [(row.id, row.is_active) for row in rows(database)] == [(ids[0], True), (ids[1], True)]


def test_a_configured_server_is_changed_in_its_file_not_through_the_api(
    database: Database,
) -> None:
    sync_configured(database, [RegisterRequest(endpoint_url="http://127.0.0.1:9101")])
    server_id = rows(database)[0].id
    with pytest.raises(Conflict, match="change or remove it there"):
        update_registration(database, server_id, UpdateRequest(weight=3), None)
    assert rows(database)[0].weight == 1


def test_api_registrations_are_left_alone(database: Database, demo_backend: ThreadedServer) -> None:
    entry = RegisterRequest(endpoint_url=demo_backend.url, model_name="demo")
    sync_configured(database, [entry])
    with database.writing() as session:
        row = session.scalars(select(ModelServer)).one()
        row.source = "api"  # as if registered through the admin API
    report = sync_configured(database, [entry])
    assert report.left_to_the_api == [demo_backend.url] and not report.registered
    assert sync_configured(database, []).deactivated == []  # not configuration's to remove
    assert [row.is_active for row in rows(database)] == [True]


def answers_as_the_upstream(gateway: GatewayProcess) -> None:
    """The gateway lists the upstream's model "tiny" (once healthd checked it) and a chat
    through it is answered."""

    def listed() -> list[str]:
        data = httpx.get(f"{gateway.url}/v1/models").json()["data"]
        return [entry["id"] for entry in data]

    asyncio.run(until(lambda: listed() == ["tiny"], 10, "the upstream's model"))
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    answer = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content


def test_upstream_alone_makes_a_single_server_proxy(tmp_path: Path, database_url: str) -> None:
    """A real gateway and healthd with nothing but UPSTREAM: the openai SDK reaches the
    server, whose private address is allowed because the operator named it."""
    with ThreadedServer(create_demo_app("tiny", chunk_interval_ms=0)) as backend:
        settings = process_settings(
            tmp_path,
            database_url,
            UPSTREAM=backend.url,
            HEALTH_CHECK_INTERVAL_SECONDS="1",
        )
        del settings["ALLOW_PRIVATE_BACKENDS"]
        del settings["ADMIN_API_KEY"]
        with GatewayProcess(tmp_path, settings) as gateway:
            healthd = start_healthd(tmp_path, settings)
            try:
                answers_as_the_upstream(gateway)
            finally:
                healthd.send_signal(signal.SIGTERM)
                assert healthd.wait(timeout=20) == 0


def test_a_bad_backends_file_stops_the_gateway_at_start(tmp_path: Path, database_url: str) -> None:
    settings = process_settings(
        tmp_path,
        database_url,
        BACKENDS_FILE=str(write(tmp_path, "[[backend]]\nendpoint_url = 'http://a'\nweight = -1\n")),
    )
    result = subprocess.run(
        [str(BIN / "gateway")],
        cwd=tmp_path,
        env=clean_environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "backend 1: weight" in lines[0], result.stderr
