"""The database failing under a running gateway: a full disk, the file deleted or
replaced. Each answers 503 naming the cause, in the OpenAI shape, and `/health` and
`/health/ready` tell the truth."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.cli.demo_backend import create_demo_app
from shared.db import upgrade_to_head
from tests.gateway.test_hostile_input import register_at
from tests.support import (
    ADMIN_KEY,
    GatewayProcess,
    ThreadedServer,
    process_settings,
    wait_for,
)

HEADERS = {"X-API-Key": ADMIN_KEY}
FULL = "the disk holding the database is full"
GONE = "the database file was deleted or replaced"


def assert_503_naming(response: httpx.Response, cause: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "service_unavailable" and error["code"] == 503
    assert cause in error["message"] and "Traceback" not in response.text


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted after the test (root only)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a file in `folder` until its filesystem has no byte left."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(chunk)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    for size in (4096, 512, 1):  # the last partial blocks
        try:
            with filler.open("ab", buffering=0) as file:
                while True:
                    file.write(b"\0" * size)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def test_a_full_disk_answers_503_and_health_says_so(tmp_path: Path, small_disk: Path) -> None:
    url = f"sqlite:///{small_disk / 'registry.db'}"
    upgrade_to_head(url)
    settings = process_settings(tmp_path, url, RATE_LIMIT_PER_MINUTE="0")
    with (
        ThreadedServer(create_demo_app("m")) as first,
        ThreadedServer(create_demo_app("m")) as second,
        GatewayProcess(tmp_path, settings) as gateway,
    ):
        assert register_at(gateway.url, first.url).status_code == 201
        filler = fill(small_disk)
        assert_503_naming(register_at(gateway.url, second.url), FULL)
        health = httpx.get(f"{gateway.url}/health").json()
        assert health["database_write"] == "failing" and health["database_problem"] == FULL
        filler.unlink()
        assert register_at(gateway.url, second.url).status_code == 201
        assert httpx.get(f"{gateway.url}/health").json()["database_write"] == "ok"
    log = (tmp_path / "gateway.stderr").read_text()
    assert "Traceback" not in log


@pytest.mark.sqlite_only("the database is a file here")
@pytest.mark.parametrize("replace", [False, True], ids=["deleted", "replaced"])
def test_a_database_file_gone_under_the_gateway_answers_503(
    tmp_path: Path, database_url: str, replace: bool
) -> None:
    path = Path(database_url.removeprefix("sqlite:///"))
    settings = process_settings(tmp_path, database_url, RATE_LIMIT_PER_MINUTE="0")
    with (
        ThreadedServer(create_demo_app("m")) as first,
        ThreadedServer(create_demo_app("m")) as second,
        GatewayProcess(tmp_path, settings) as gateway,
    ):
        wait_for(lambda: httpx.get(f"{gateway.url}/health/ready").status_code == 200)
        assert register_at(gateway.url, first.url).status_code == 201
        path.unlink()
        if replace:
            upgrade_to_head(database_url)  # a new, empty registry at the same path
        assert_503_naming(register_at(gateway.url, second.url), GONE)
        ready = httpx.get(f"{gateway.url}/health/ready")
        assert_503_naming(ready, GONE)
        health = httpx.get(f"{gateway.url}/health").json()
        assert health["database_write"] == "failing" and GONE in health["database_problem"]
        system = httpx.get(f"{gateway.url}/admin/system", headers=HEADERS).json()
        assert str(path) in system["database"]["file_problem"]
    assert os.path.exists(path) == replace
