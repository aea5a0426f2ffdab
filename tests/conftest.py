"""Shared fixtures: a migrated database (a SQLite file, or a PostgreSQL database with
TEST_DATABASE=postgresql), settings, real backends and a real gateway."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.cli.demo_backend import create_demo_app
from shared.db import Database, upgrade_to_head
from shared.logging import Redactor, configure_logging
from shared.settings import Settings
from shared.urls import Resolver
from tests.databases import (
    PostgresServer,
    make_url_redis,
    postgres_admin_url,
    redis_test_url,
    require_service,
    test_engine,
)
from tests.support import ADMIN_KEY, ThreadedServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): a test of SQLite itself (its file, its locks); skipped on PostgreSQL",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"database engine: {test_engine()} (TEST_DATABASE)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if test_engine() == "sqlite":
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            why = marker.args[0] if marker.args else "a test of SQLite itself"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {why}"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server of the run, with the schema migrated once into a template."""
    server = PostgresServer(postgres_admin_url())
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, whatever TEST_DATABASE says."""
    with postgres_server.fresh() as url:
        yield url


@pytest.fixture(autouse=True)
def _no_gateway_settings_from_outside(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see only the settings they set: no stray environment, no `.env` of the checkout."""
    for name in list(os.environ):
        if name.lower() in Settings.model_fields or name == "GATEWAY_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test's own migrated database, on the engine TEST_DATABASE names."""
    if test_engine() == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        with server.fresh() as url:
            yield url
        return
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade_to_head(url)
    yield url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database.connect(database_url)
    yield database
    database.dispose()


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "admin_api_key": ADMIN_KEY,
            "allow_private_backends": True,
            "log_dir": str(tmp_path / "logs"),
            "health_check_timeout_seconds": 3,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@pytest.fixture
def redactor() -> Redactor:
    return Redactor([ADMIN_KEY])


@pytest.fixture
def start_gateway(
    make_settings: Callable[..., Settings], database: Database, redactor: Redactor, tmp_path: Path
) -> Iterator[Callable[..., ThreadedServer]]:
    """Start the gateway app under a real uvicorn, in a thread; stopped after the test."""
    started: list[ThreadedServer] = []

    def start(resolver: Resolver | None = None, **overrides: Any) -> ThreadedServer:
        settings = make_settings(**overrides)
        outputs = configure_logging(
            process="gateway",
            level="INFO",
            log_dir=settings.log_dir,
            default_component="api",
            redactor=redactor,
            console=False,
        )
        kwargs: dict[str, Any] = {"redactor": redactor, "log_outputs": outputs}
        if resolver is not None:
            kwargs["resolver"] = resolver
        app = create_app(settings, database, **kwargs)
        server = ThreadedServer(app).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def gateway(start_gateway: Callable[..., ThreadedServer]) -> ThreadedServer:
    return start_gateway()


@pytest.fixture
def demo_backend() -> Iterator[ThreadedServer]:
    with ThreadedServer(create_demo_app("demo", chunk_interval_ms=0)) as server:
        yield server


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The test Redis's URL (TEST_REDIS_URL); skipped where none runs, failed under CI."""
    url = redis_test_url()
    parsed = make_url_redis(url)
    require_service("Redis", *parsed)
    yield url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"gwtest:{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()
