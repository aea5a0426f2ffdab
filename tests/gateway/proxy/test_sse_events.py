"""Whole server-sent events only: where events end, and a reader that holds back a partial one."""

from __future__ import annotations

import asyncio

import pytest

from gateway.proxy.relay import EventReader, complete_events_end


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"", 0),
        (b"data: 1\n\n", 9),
        (b"data: 1\n\ndata: 2", 9),  # the second is not finished
        (b"data: 1\n\ndata: 2\n\n", 18),
        (b"data: 1\r\n\r\n", 11),
        (b"data: 1\r\rdata", 9),
        (b"data: 1\n\r\n", 10),
        (b"data: 1\n", 0),  # a line, not yet an event
        (b"data: 1\ndata: 2\n", 0),
        (b"da", 0),  # inside a field name
        (b": comment\n\n", 11),
    ],
)
def test_complete_events_end(data: bytes, end: int) -> None:
    assert complete_events_end(data) == end


class Chunks:
    """A ResponseStream stand-in that hands out chunks as given."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def read_chunk(
        self, deadline: float | None = None, *, idle: float | None = None
    ) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


async def read_all(reader: EventReader) -> list[bytes]:
    runs = []
    while run := await reader.read():
        runs.append(run)
    return runs


@pytest.mark.parametrize(
    ("chunks", "runs"),
    [
        ([b"data: 1\n\n", b"data: 2\n\n"], [b"data: 1\n\n", b"data: 2\n\n"]),
        # Cut inside an event, inside a field name, between the two line ends.
        ([b"data: 1\n\nda", b"ta: 2\n\n"], [b"data: 1\n\n", b"data: 2\n\n"]),
        ([b"data: 1\n", b"\ndata: 2\n\n"], [b"data: 1\n\ndata: 2\n\n"]),
        ([b"d", b"a", b"ta: 1\n\n"], [b"data: 1\n\n"]),
        # The body ends cleanly with an unfinished event: its bytes pass as they are.
        ([b"data: 1\n\ndata: 2"], [b"data: 1\n\n", b"data: 2"]),
    ],
)
def test_event_reader_returns_whole_events(chunks: list[bytes], runs: list[bytes]) -> None:
    reader = EventReader(Chunks(*chunks))  # type: ignore[arg-type]
    assert asyncio.run(read_all(reader)) == runs
