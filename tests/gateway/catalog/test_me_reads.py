"""GET /v1/me reads a key's usage rows at most once a second per worker."""

from __future__ import annotations

import asyncio

import pytest

from gateway.catalog import me
from shared.db import Database


@pytest.mark.asyncio
async def test_usage_rows_are_read_once_for_a_burst_and_again_after_a_write(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real = me.read_usage

    def counted(database: Database, key_id: str, since: int) -> me.UsageRows:
        reads.append(key_id)
        return real(database, key_id, since)

    monkeypatch.setattr(me, "read_usage", counted)
    now = [100.0]
    monkeypatch.setattr(me.time, "monotonic", lambda: now[0])
    usage = me.UsageReads(database)
    # A burst of callers, and calls just after: one read.
    await asyncio.gather(*(usage.rows("k1", 0, generation=7) for _ in range(20)))
    await usage.rows("k1", 0, generation=7)
    assert reads == ["k1"]
    # This worker wrote a batch since: read again; another key: its own read.
    await usage.rows("k1", 0, generation=8)
    await usage.rows("k2", 0, generation=8)
    assert reads == ["k1", "k1", "k2"]
    # A second later, read again.
    now[0] += me.USAGE_READ_SECONDS
    await usage.rows("k1", 0, generation=8)
    assert reads == ["k1", "k1", "k2", "k1"]


@pytest.mark.asyncio
async def test_the_feedback_generation_moves_when_a_batch_is_taken_and_when_it_is_written(
    database: Database,
) -> None:
    """What UsageReads keys its reads by: a read made while a batch was neither pending
    nor written yet must not be reused once it is written."""
    from gateway.accounting.feedback import Feedback, flush

    feedback = Feedback()
    feedback.record_client("k1", "m", ok=True, latency_ms=1.0, usage=(1, 2))
    seen = []
    real_take = feedback.take

    def take() -> object:
        batch = real_take()
        seen.append(feedback.generation)  # taken, not written yet
        return batch

    feedback.take = take  # type: ignore[method-assign, assignment]
    await flush(feedback, database)
    assert seen == [1] and feedback.generation == 2
