"""Responses API affinity: reading a response's id, and the bounded memory of owners."""

from __future__ import annotations

import pytest

from gateway.accounting.feedback import Feedback
from gateway.routing.affinity import (
    ResponseOwners,
    read_owner,
    response_id_in_events,
    response_id_of,
)
from shared.db import Database
from shared.models import ModelServer


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b'{"id": "resp_1", "object": "response"}', "resp_1"),
        (b'{"id": "chatcmpl-1", "object": "chat.completion"}', None),
        (b'{"id": 5, "object": "response"}', None),
        (b"not json", None),
        (b'{"id": "' + b"x" * 300 + b'", "object": "response"}', None),
    ],
)
def test_response_id_of(answer: bytes, expected: str | None) -> None:
    assert response_id_of(answer) == expected


def test_response_id_in_the_first_events() -> None:
    events = (
        b"event: response.created\n"
        b'data: {"type": "response.created", "response": {"id": "resp_9", "object": "response"}}'
        b"\n\n"
    )
    assert response_id_in_events(events) == "resp_9"
    assert response_id_in_events(b'data: {"choices": []}\n\n') is None


async def test_owners_are_remembered_and_bounded() -> None:
    owners = ResponseOwners(Feedback().record_response_owner, database=None, limit=2)
    await owners.remember("r1", "a")
    await owners.remember("r2", "b")
    assert await owners.owner("r1") == "a"  # now the most recently used
    await owners.remember("r3", "c")
    assert await owners.owner("r2") is None  # the least recently used went
    assert (await owners.owner("r1"), await owners.owner("r3")) == ("a", "c")


async def test_an_owner_is_written_before_remember_returns(database: Database) -> None:
    """Another worker must find it at once; a write that fails goes with the batch."""
    with database.writing() as session:
        session.add(ModelServer(id="a", model_name="m", endpoint_url="http://a"))
    feedback = Feedback()
    owners = ResponseOwners(feedback.record_response_owner, database)
    await owners.remember("r1", "a")
    assert read_owner(database, "r1") == "a"
    await owners.remember("r2", "gone")  # no such registration: the batch skips it later
    assert feedback.take().response_owners == {"r2": "gone"}
