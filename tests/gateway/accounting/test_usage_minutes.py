"""Usage minutes added by many writers at once (workers, instances) lose nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from gateway.accounting.feedback import add_key_minutes, add_minutes
from gateway.accounting.windows import Counts
from shared.db import Database
from shared.models import ClientKey, KeyUsageMinute, ModelServer, UsageMinute

WRITERS = 8
ROUNDS = 5


def add_concurrently(database: Database) -> list[int]:
    with database.writing() as session:
        session.add(ModelServer(id="b", endpoint_url="http://b.example"))

    def one_writer(_: int) -> None:
        for _round in range(ROUNDS):
            # Two keys, in another order for each writer: the locks are taken in key
            # order all the same, so no writer waits on another in a circle.
            keys = [(1, "b", "m"), (2, "b", "m")]
            minutes = {key: Counts(requests=1, prompt_tokens=3) for key in keys}
            with database.writing() as session:
                add_minutes(session, dict(reversed(minutes.items())) if _ % 2 else minutes)

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(one_writer, range(WRITERS)))
    with database.reading() as session:
        return [
            row.requests
            for row in session.scalars(select(UsageMinute).order_by(UsageMinute.minute))
        ]


def test_concurrent_writers_lose_no_addition(database: Database) -> None:
    assert add_concurrently(database) == [WRITERS * ROUNDS] * 2


def test_concurrent_writers_lose_no_addition_on_postgresql(postgres_url: str) -> None:
    database = Database.connect(postgres_url)
    try:
        assert add_concurrently(database) == [WRITERS * ROUNDS] * 2
    finally:
        database.dispose()


def add_key_usage_concurrently(database: Database) -> list[int]:
    """The same for client keys' minutes (add_key_minutes shares the locking)."""
    with database.writing() as session:
        session.add(ClientKey(id="k", name="n", owner="o", key_hash="h" * 64, prefix="mvk_x"))

    def one_writer(_: int) -> None:
        for _round in range(ROUNDS):
            minutes = {(1, "k", "m"): Counts(requests=1), (2, "k", "m"): Counts(requests=1)}
            with database.writing() as session:
                add_key_minutes(session, minutes, {"k": 1.0})

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(one_writer, range(WRITERS)))
    with database.reading() as session:
        return [
            row.requests
            for row in session.scalars(select(KeyUsageMinute).order_by(KeyUsageMinute.minute))
        ]


def test_concurrent_key_usage_writers_lose_no_addition(database: Database) -> None:
    assert add_key_usage_concurrently(database) == [WRITERS * ROUNDS] * 2


def test_concurrent_key_usage_writers_lose_no_addition_on_postgresql(postgres_url: str) -> None:
    database = Database.connect(postgres_url)
    try:
        assert add_key_usage_concurrently(database) == [WRITERS * ROUNDS] * 2
    finally:
        database.dispose()
