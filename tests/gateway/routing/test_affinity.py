"""Responses API affinity: reading a response's id, and the bounded memory of owners."""

from __future__ import annotations

import pytest

from gateway.accounting.feedback import Feedback
from gateway.routing.affinity import ResponseOwners, response_id_in_events, response_id_of


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


async def test_owners_are_remembered_written_and_bounded() -> None:
    feedback = Feedback()
    owners = ResponseOwners(feedback, database=None, limit=2)
    owners.remember("r1", "a")
    owners.remember("r2", "b")
    assert await owners.owner("r1") == "a"  # now the most recently used
    owners.remember("r3", "c")
    assert await owners.owner("r2") is None  # the least recently used went
    assert (await owners.owner("r1"), await owners.owner("r3")) == ("a", "c")
    assert feedback.take().response_owners == {"r1": "a", "r2": "b", "r3": "c"}
