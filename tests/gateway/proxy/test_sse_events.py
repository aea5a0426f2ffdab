"""Whole server-sent events only: where events end, and a reader that holds back a partial one."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gateway.proxy.relay import NDJSON, SSE, EventReader, StreamFormat, complete_events_end


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


STREAMS = {
    "LF": (
        SSE,
        [b"data: 1\n\n", b"event: x\ndata: 2\n\n", b": comment\n\n", b'data: {"a": 3}\n\n'],
    ),
    "CRLF": (SSE, [b"data: 1\r\n\r\n", b"id: 2\r\ndata: 2\r\n\r\n"]),
    "CR": (SSE, [b"data: 1\r\r", b"data: 2\r\r"]),
    "mixed line ends": (SSE, [b"data: 1\n\r\n", b"data: 2\r\n\n", b"data: 3\n\n"]),
    "unfinished at the end": (SSE, [b"data: 1\r\n\r\n", b"data: 2\r\n\r\n", b"data: 3\r\n"]),
    "NDJSON": (NDJSON, [b'{"a": 1}\n', b'{"b": "x\\ny"}\n', b'{"c": 3}']),
}


def boundaries(records: list[bytes], stream_format: StreamFormat) -> list[int]:
    """Where each whole record of the stream ends."""
    ends, at = [], 0
    for record in records:
        at += len(record)
        if stream_format.complete_end(record):
            ends.append(at)
    return ends


def read_chunks(stream_format: StreamFormat, chunks: list[bytes]) -> list[bytes]:
    reader = EventReader(Chunks(*chunks), stream_format)  # type: ignore[arg-type]
    return asyncio.run(read_all(reader))


@pytest.mark.parametrize(("stream_format", "records"), STREAMS.values(), ids=list(STREAMS))
def test_every_split_gives_the_same_records(
    stream_format: StreamFormat, records: list[bytes]
) -> None:
    """Cut in two at every byte, the stream gives the whole records before the cut in
    one run, then the rest; fed byte by byte, one record per run."""
    stream = b"".join(records)
    ends = boundaries(records, stream_format)
    for cut in range(1, len(stream)):
        before = max((end for end in ends if end <= cut), default=0)
        points = sorted({0, before, ends[-1], len(stream)})
        expected = [stream[a:b] for a, b in itertools.pairwise(points)]
        assert read_chunks(stream_format, [stream[:cut], stream[cut:]]) == expected, cut
    one_by_one = [stream[at : at + 1] for at in range(len(stream))]
    assert read_chunks(stream_format, one_by_one) == records


class Scanned:
    """A stream format that counts the bytes it is asked to search (a seam, no timing)."""

    def __init__(self, stream_format: StreamFormat) -> None:
        self.bytes = 0
        self.inner = stream_format
        self.format = StreamFormat(self.complete_end, stream_format.error_record)

    def complete_end(self, data: bytes) -> int:
        self.bytes += len(data)
        return self.inner.complete_end(data)


@pytest.mark.parametrize("stream_format", [SSE, NDJSON], ids=["SSE", "NDJSON"])
def test_a_trickled_record_is_searched_once(stream_format: StreamFormat) -> None:
    """A 256 KiB record in 1,025 chunks: each byte is searched about once (it was searched
    again with every later chunk: 128 MiB in all, quadratic in the record's size)."""
    record = b"data: " + b"x" * (256 * 1024) + b"\n\n"
    chunks = [record[at : at + 256] for at in range(0, len(record), 256)]
    scanned = Scanned(stream_format)
    assert read_chunks(scanned.format, chunks) == [record]
    assert scanned.bytes <= len(record) + len(chunks) * EventReader.CARRY
