"""Reading a backend's chunks and writing documents fast (orjson), and what orjson would
get wrong or refuse going to the standard parser and encoder, as before."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.relay import BufferedResponse
from gateway.proxy.translated import _translated_whole
from gateway.translate.common import as_count, chunk_of, json_bytes, record_bytes
from gateway.translate.table import TRANSLATIONS, Exchange


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
        (b'{"a":"\xff"}', None),  # not UTF-8
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


def test_an_integer_past_64_bits_is_no_count_either_way() -> None:
    """The one place orjson reads otherwise (a float, where the standard parser gives an
    int): no count or index a translation reads is one."""
    chunk = chunk_of('{"usage":{"prompt_tokens":123456789012345678901234567890}}')
    assert chunk is not None
    assert as_count(chunk["usage"]["prompt_tokens"]) == 0
    assert as_count(json.loads("123456789012345678901234567890")) > 0  # (its own check)


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
    if not _has_big_int(expected):
        assert chunk_of(text) == expected
        assert chunk_of(text.encode("utf-8", "surrogatepass")) == expected


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_a_document_reads_back_as_it_was(document: Any) -> None:
    assert json.loads(json_bytes(document)) == document
    if "Infinity" not in json.dumps(document):  # (a record holds no infinity: counts)
        assert json.loads(record_bytes(document)) == document


def _has_big_int(value: object) -> bool:
    if type(value) is int:
        return not -(2**63) <= value < 2**64
    if isinstance(value, dict):
        return any(_has_big_int(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_big_int(item) for item in value)
    return False


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/v1/messages"])
def test_a_whole_answer_with_a_lone_surrogate_is_translated(path: str) -> None:
    """The backend's escape of a lone surrogate reaches the client as an escape (it was
    a 500: the answer could not be encoded)."""
    body = b'{"choices":[{"message":{"content":"a\\ud800 \\u00e9"},"finish_reason":"stop"}]}'
    answer = _translated_whole(
        BufferedResponse(200, [], body), TRANSLATIONS[path], Exchange("m", 0.0, 0.0), []
    )
    assert answer.status == 200
    assert "a\ud800 é" in json.dumps(json.loads(answer.body), ensure_ascii=False)
