"""Reading a backend's chunks and writing documents fast (orjson), and what orjson would
get wrong or refuse going to the standard parser and encoder, as before."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.relay import BufferedResponse
from gateway.proxy.translated import _translated_whole
from gateway.translate.common import (
    MAX_ARGUMENTS_DEPTH,
    chunk_of,
    is_done,
    json_bytes,
    loads_object,
    record_bytes,
    request_bytes,
    sse_data,
    tool_arguments,
)
from gateway.translate.ollama_response import created_at
from gateway.translate.table import TRANSLATIONS, Exchange
from shared.errors import InvalidRequest


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"a":1,"b":[true,null,"é"]}', {"a": 1, "b": [True, None, "é"]}),
        (b'{"a":"\\u00e9"}', {"a": "é"}),
        ('{"a":1,"a":2}', {"a": 2}),  # the last of duplicate keys, as the standard parser
        ('{"a":"\\ud800"}', {"a": "\ud800"}),  # a lone surrogate: the standard parser's
        ("[DONE]", None),
        ("[1]", None),
        ('"text"', None),
        (b'{"a":"\xff"}', {"a": "\ufffd"}),  # not UTF-8: replaced, as a stream's always was
        (b'{"a":"\xed\xa0\x80"}', {"a": "\ufffd\ufffd\ufffd"}),  # a surrogate in UTF-8
        (b'{"a":1' + b"2" * 19 + b"}", {"a": int("1" + "2" * 19)}),  # past 64 bits, as bytes
        (b'{"a":' + b"0" * 19 + b"}", None),  # not JSON (leading zeros) either way
        ("[" * 100_000, None),  # nested past what either parser reads: never raises
        ('{"a":' * 5_000 + "1" + "}" * 5_000, None),
        ("", None),
    ],
)
def test_chunks(payload: str | bytes, expected: object) -> None:
    assert chunk_of(payload) == expected


def test_what_only_the_standard_parser_reads_is_still_read() -> None:
    assert math.isnan(chunk_of('{"a":NaN}')["a"])  # type: ignore[index]
    assert chunk_of('{"a":1e400}') == {"a": math.inf}


@pytest.mark.parametrize("number", ["18446744073709551616", "-9223372036854775809", "1" + "0" * 30])
def test_an_integer_past_64_bits_is_read_as_the_integer_it_is(number: str) -> None:
    """orjson would read it as a float (a count of 0, tool calls merged): it is read by
    the standard parser."""
    payload = f'{{"usage":{{"prompt_tokens":{number}}}}}'
    for written in (payload, payload.encode()):
        chunk = chunk_of(written)
        assert chunk is not None
        assert chunk["usage"]["prompt_tokens"] == int(number)


def test_nesting_too_deep_for_the_parser_is_no_tool_call_and_no_answer() -> None:
    deep = '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"
    assert loads_object(deep) is None
    answer = _translated_whole(
        BufferedResponse(200, [], deep.encode()),
        TRANSLATIONS["/api/chat"],
        Exchange("m", 0.0, 0.0),
        [],
    )
    assert answer.status == 502


def _call(arguments: object) -> dict[str, Any]:
    function = {"name": "f", "arguments": arguments}
    message = {"role": "assistant", "content": None, "tool_calls": [{"function": function}]}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}


def test_arguments_nested_near_the_recursion_limit_are_no_object_and_no_error() -> None:
    """From a review: arguments the parser could just read (nested ~990 deep) could not
    be written again by the standard encoder (orjson stops at 255): a RecursionError
    out of the translation. Past MAX_ARGUMENTS_DEPTH they are no object, as text that
    is not JSON; below it, the object is kept."""
    exchange = Exchange("m", 0.0, 0.0)
    for depth in (*range(900, 1000, 3), MAX_ARGUMENTS_DEPTH):
        deep = "[" * depth + "]" * depth
        for arguments in (f'{{"a":{deep}}}', {"a": json.loads(deep) if depth < 500 else []}):
            for path in ("/api/chat", "/v1/messages"):
                answer = TRANSLATIONS[path].answer(_call(arguments), exchange, 1.0)
                json_bytes(answer)
                record_bytes(answer)
    kept = '{"a":' + "[" * (MAX_ARGUMENTS_DEPTH - 1) + "]" * (MAX_ARGUMENTS_DEPTH - 1) + "}"
    assert loads_object(kept) == json.loads(kept)
    past = '{"a":' + "[" * MAX_ARGUMENTS_DEPTH + "]" * MAX_ARGUMENTS_DEPTH + "}"
    assert loads_object(past) is None and tool_arguments(json.loads(past)) is None
    assert tool_arguments(json.loads(kept)) == json.loads(kept)


@pytest.mark.parametrize(
    "arguments",
    [
        '{"x": NaN}',
        '{"x": [1, -Infinity]}',
        '{"x": {"y": 1e400}}',
        {"x": math.nan},
        {"x": [{"y": -math.inf}]},
    ],
)
def test_arguments_holding_what_json_cannot_are_no_object(arguments: object) -> None:
    """From a review: a model's arguments with NaN (which vLLM does not check) were read
    by Python's parser and written back as NaN: JSON no client's parser reads."""
    assert tool_arguments(arguments) is None
    exchange = Exchange("m", 0.0, 0.0)
    for path, inside in (("/api/chat", "arguments"), ("/v1/messages", "input")):
        answer = TRANSLATIONS[path].answer(_call(arguments), exchange, 1.0)
        written = json_bytes(answer)
        assert b"NaN" not in written and b"Infinity" not in written
        assert f'"{inside}":{{}}'.encode() in written
    assert tool_arguments('{"x": 1.5e300, "n": 12345678901234567890123}') == {
        "x": 1.5e300,
        "n": 12345678901234567890123,
    }


@pytest.mark.parametrize(
    ("document", "written"),
    [
        ({"a": 1, "b": [True, "é"]}, b'{"a":1,"b":[true,"\xc3\xa9"]}'),
        ({"t": math.nan}, b'{"t":NaN}'),  # as the client wrote it, never orjson's null
        ({"t": math.inf, "u": -math.inf}, b'{"t":Infinity,"u":-Infinity}'),
        ({"t": "\ud800"}, b'{"t":"\\ud800"}'),
        ({"n": 2**70}, b'{"n":1180591620717411303424}'),
        ({"a": None, "b": "é"}, b'{"a":null,"b":"\\u00e9"}'),
    ],
)
def test_documents_are_written_as_they_were_said(document: object, written: bytes) -> None:
    assert json_bytes(document) == written


@pytest.mark.parametrize(
    ("document", "written"),
    [
        ({"a": 1, "b": [True, "é"]}, b'{"a":1,"b":[true,"\xc3\xa9"]}'),
        ({"t": "\ud800", "n": None}, b'{"t":"\\ud800","n":null}'),
        ({"n": 2**70}, b'{"n":1180591620717411303424}'),
        # orjson's UTF-8, a null in it or not (the standard encoder's ASCII escapes made
        # a Japanese text three times longer: every Messages tool turn has a null)
        ({"content": None, "t": "日本"}, '{"content":null,"t":"日本"}'.encode()),
    ],
)
def test_a_translated_request_is_written_as_json(document: object, written: bytes) -> None:
    assert request_bytes(document) == written


def test_a_request_nested_past_what_can_be_written_is_the_clients_400() -> None:
    # A translation may put a client's schema a level or two deeper than it came.
    deep: object = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        request_bytes({"format": {"schema": deep}})


@pytest.mark.parametrize(
    ("record", "written"),
    [
        ({"done": False, "text": "é"}, b'{"done":false,"text":"\xc3\xa9"}'),
        ({"text": "a\udfffb", "n": None}, b'{"text":"a\\udfffb","n":null}'),
        ("\ud800", b'"\\ud800"'),
        ({"n": 2**70}, b'{"n":1180591620717411303424}'),
    ],
)
def test_records_always_write(record: object, written: bytes) -> None:
    assert record_bytes(record) == written


TEXT = st.text() | st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u2028"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)  # (NaN is no value equal to itself: a row above)
    | TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(JSON, st.booleans())
def test_a_chunk_reads_as_the_standard_parser_reads_it(document: Any, ascii_only: bool) -> None:
    text = json.dumps(document, ensure_ascii=ascii_only)
    expected = json.loads(text)
    expected = expected if isinstance(expected, dict) else None
    assert chunk_of(text) == expected
    # As bytes (a stream's event), what is not UTF-8 (a surrogate's bytes) is replaced.
    raw = text.encode("utf-8", "surrogatepass")
    from_bytes = json.loads(raw.decode("utf-8", "replace"))
    assert chunk_of(raw) == (from_bytes if isinstance(from_bytes, dict) else None)


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_a_document_reads_back_as_it_was(document: Any) -> None:
    assert json.loads(json_bytes(document)) == document
    if "Infinity" not in json.dumps(document):  # (a record holds no infinity: counts)
        assert json.loads(record_bytes(document)) == document


@pytest.mark.parametrize(
    ("data", "done"),
    [
        (b"[DONE]", True),
        (b" [DONE]\t", True),
        (b"\xc2\xa0[DONE]\xe2\x80\x83", True),  # Unicode spaces, as str.strip() reads them
        (b"\x1c[DONE]", True),  # (a separator str.strip() takes for a space)
        (b"[DONE]x", False),
        (b"\xff[DONE]", False),  # replaced, and U+FFFD is no space
        (b'"[DONE]"', False),
        (b"[done]", False),
        (b"", False),
    ],
)
def test_done_is_read_from_the_bytes_as_from_the_text(data: bytes, done: bool) -> None:
    assert is_done(data) is done
    assert (data.decode("utf-8", "replace").strip() == "[DONE]") is done


@pytest.mark.parametrize(
    ("event", "data"),
    [
        (b"data: {}", b"{}"),
        (b"data:{}", b"{}"),
        (b"event: x\ndata: a\ndata:  b", b"a\n b"),  # joined; one space after the colon taken
        (b"event: x", None),
        (b"data: \xff", b"\xff"),  # as it came: chunk_of replaces what is not UTF-8
    ],
)
def test_an_events_data_is_its_bytes(event: bytes, data: bytes | None) -> None:
    assert sse_data(event) == data


# created_at formats the second once, then adds the microseconds: as datetime would.
@pytest.mark.parametrize(
    "epoch",
    [
        0.0,
        1733300000.0,
        1733300000.5,
        1733300000.0000005,  # half a microsecond: to even (0)
        1733300000.0000015,  # to even (2)
        1733300000.9999996,  # rounds up into the next second
        1733300000.9999994,
        1.0e-7,
        253402300798.9999999,  # into the last second datetime holds
        253402300799.5,  # past it: datetime's own error, not another text
        -1.5,
        1733300000,  # an int (a backend's `created`)
        float("nan"),
    ],
)
def test_created_at_is_what_datetime_writes(epoch: float) -> None:
    try:
        expected: object = datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError) as error:
        expected = type(error)
    try:
        written: object = created_at(epoch)
    except (ValueError, OverflowError, OSError) as error:
        written = type(error)
    assert written == expected


@settings(max_examples=2000, deadline=None)
@given(st.floats(min_value=0, max_value=2**34))
def test_created_at_is_what_datetime_writes_for_any_time(epoch: float) -> None:
    expected = datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
    assert created_at(epoch) == expected
