"""The generation trigger fires on exactly the columns the routing snapshot reads.

`shared.models.ROUTING_COLUMNS` is the one list; a migrated database's trigger
is compared to it, and each column of `model_servers` is changed in a real
database (a SQLite file, or PostgreSQL with TEST_DATABASE=postgresql) to see
whether the snapshot (`load_snapshot`) reads it and whether the generation
moved.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text, update

from gateway.routing.registry import RegistrySnapshot, load_snapshot, read_generation
from shared.db import Database
from shared.models import ROUTING_COLUMNS, ModelServer, utcnow

T0 = utcnow().replace(microsecond=0) - timedelta(days=1)
T1 = T0 + timedelta(hours=1)

# Two registrations that between them use every way the snapshot reads a row: one
# names its model (and the backend's name for it), one serves what its server lists.
BASE: dict[str, Any] = {
    "endpoint_url": "http://a.example",
    "api_key": "k",
    "streaming_supported": True,
    "student_id": "alice",
    "tags": ["gpu"],
    "priority": 0,
    "weight": 1,
    "max_concurrent": 4,
    "health_status": "healthy",
    "status_changed_at": T0,
    "registered_at": T0,
    "created_at": T0,
    "updated_at": T0,
    "model_details": {"bm": {"max_model_len": 100}, "x": {"max_model_len": 10}},
}
NAMED = {**BASE, "id": "named", "model_name": "m", "backend_model": "bm", "reported_models": ["bm"]}
LISTING = {**BASE, "id": "listing", "model_name": None, "reported_models": ["x"]}

# A new value for every column but the key: a column added to the table must be
# added here, which makes its author say whether routing reads it.
CHANGES: dict[str, Any] = {
    "model_name": "m2",
    "backend_model": "bm2",
    "endpoint_url": "http://b.example",
    "api_key": "k2",
    "max_tokens": 99,
    "context_length": 99,
    "streaming_supported": False,
    "student_id": "bob",
    "description": "moved",
    "tags": ["cpu"],
    "priority": 1,
    "weight": 5,
    "max_concurrent": 8,
    "health_status": "unhealthy",
    "last_checked_at": T1,
    "status_changed_at": T1,
    "consecutive_failures": 2,
    "last_error": "boom",
    "last_response_time_ms": 12.0,
    "reported_models": ["y"],
    "model_details": {"bm": {"max_model_len": 200}, "x": {"max_model_len": 20}},
    "source": "config",
    "management_token_hash": "0" * 64,
    "draining": True,
    "notify_url": "http://n.example",
    "notify_format": "slack",
    "model_faults": {"m": "the canary generation answered HTTP 500", "x": "no choices"},
    "canaries_sent": 3,
    "model_mismatches": {"m": {"answers": 9, "mismatched": 1, "named": "x", "suspect": False}},
    "lease_connected_at": T1,
    "lease_heartbeat_at": T1,
    "lease_expires_at": T1 + timedelta(days=2),
    "success_rate": 50.0,
    "avg_response_time_ms": 50.0,
    "uptime_percent": 50.0,
    "is_active": False,
    "deregistered_at": T1,
    "registered_at": T1,
    "created_at": T1,
    "updated_at": T1,
}


@pytest.fixture
def database(database_url: str) -> Any:
    database = Database.connect(database_url)
    with database.writing() as session:
        session.add_all([ModelServer(**NAMED), ModelServer(**LISTING)])
    yield database
    database.dispose()


def trigger_columns(database: Database) -> set[str]:
    if database.engine.dialect.name == "postgresql":
        with database.reading() as session:
            return set(
                session.scalars(
                    text(
                        "SELECT a.attname FROM pg_trigger t JOIN pg_attribute a "
                        "ON a.attrelid = t.tgrelid AND a.attnum = ANY(t.tgattr) "
                        "WHERE t.tgname = 'model_servers_bumps_generation'"
                    )
                )
            )
    with database.reading() as session:
        sql = session.scalar(
            text(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                "AND name = 'model_servers_update_bumps_generation'"
            )
        )
    found = re.search(r"AFTER UPDATE OF (.+?) ON model_servers", str(sql))
    assert found, sql
    return {column.strip() for column in found.group(1).split(",")}


def routing_view(snapshot: RegistrySnapshot) -> tuple[object, ...]:
    return (dict(snapshot.by_model), dict(snapshot.created), dict(snapshot.details))


def test_the_migrated_trigger_fires_on_the_routing_columns(database: Database) -> None:
    assert trigger_columns(database) == set(ROUTING_COLUMNS)


def test_every_column_but_the_key_has_a_change_to_try() -> None:
    assert set(CHANGES) == {c.name for c in ModelServer.__table__.columns} - {"id"}


@pytest.mark.parametrize("column", sorted(CHANGES))
def test_a_column_bumps_the_generation_exactly_when_routing_reads_it(
    database: Database, column: str
) -> None:
    before, generation = load_snapshot(database), read_generation(database)
    with database.writing() as session:
        session.execute(update(ModelServer).values({column: CHANGES[column]}))
    read = routing_view(load_snapshot(database)) != routing_view(before)
    bumped = read_generation(database) != generation
    listed = column in ROUTING_COLUMNS
    assert (read, bumped) == (listed, listed), (
        f"{column}: the snapshot {'reads' if read else 'does not read'} it, "
        f"the trigger {'fires' if bumped else 'does not fire'}, "
        f"ROUTING_COLUMNS {'lists' if listed else 'does not list'} it"
    )
