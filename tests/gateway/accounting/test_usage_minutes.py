"""Usage minutes added by many writers at once (workers, instances) lose nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from gateway.accounting.feedback import add_minutes
from gateway.accounting.windows import Counts
from shared.db import Database
from shared.models import ModelServer, UsageMinute

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
