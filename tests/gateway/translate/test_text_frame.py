"""Text events read through their frame (gateway/translate/text_frame.py) translate to
what parsing each would give: the same records, whatever bytes come in the frame."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.translate import anthropic_response
from gateway.translate import ollama_response as ollama
from gateway.translate.common import sse_payloads
from gateway.translate.table import StreamTranslator
from gateway.translate.text_frame import MAX_IDLE_FRAMES, TextFrame, content_span


def _event(document: object, *, space: bool = True) -> bytes:
    separators = (", ", ": ") if space else (",", ":")
    return b"data: " + json.dumps(document, separators=separators).encode() + b"\n\n"


def _chunk(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
        ],
        **extra,
    }


VLLM = _event(_chunk(" Paris"), space=False)[:-2]


@pytest.mark.parametrize(
    ("event", "found"),
    [
        (VLLM, b'" Paris"'),
        (_event(_chunk(" Paris"))[:-2], b'" Paris"'),  # spaced JSON
        (b"data:" + VLLM[6:], b'" Paris"'),  # no space after "data:"
        (_event(_chunk('say "hi" \u00e9'), space=False)[:-2], b'"say \\"hi\\" \\u00e9"'),
        # a "content" member inside a string is no member
        (VLLM.replace(b'"model":"m"', b'"model":"x\\"content\\":\\"y"'), b'" Paris"'),
        # a key that ends in "content" is another member
        (VLLM.replace(b'" Paris"}', b'" Paris","x\\"content":"v"}'), b'" Paris"'),
        # the parser reads the last of duplicate keys
        (VLLM.replace(b'{"content":', b'{"content":"first","content":'), b'" Paris"'),
        (VLLM.replace(b'" Paris"}', b'" Paris","content":"last"}'), b'"last"'),
        (VLLM.replace(b'"content"', b'"c\\u006fntent"'), None),  # an escaped key: not found
        (VLLM.replace(b"data: ", b"event: x\ndata: "), None),  # two lines
        (VLLM.replace(b'"finish_reason":null', b'"finish_reason":"stop"'), None),
        (VLLM.replace(b'"choices":[{', b'"choices":[1,{'), None),  # its first choice no object
        (VLLM.replace(b'"chatcmpl-1"', b'"\\ud800"'), b'" Paris"'),  # a lone surrogate, elsewhere
        # not UTF-8 (the parser reads it replaced): no frame is learnt from it
        (VLLM.replace(b'" Paris"', b'" Par\xffis"'), None),
        (VLLM.replace(b'"chatcmpl-1"', b'"chatcmpl-\xc3"'), None),
        (VLLM.replace(b'" Paris"', '" Paris é"'.encode()), '" Paris é"'.encode()),
    ],
)
def test_where_the_content_string_sits(event: bytes, found: bytes | None) -> None:
    span = content_span(event)
    assert (None if span is None else event[span[0] : span[1]]) == found


def _learnt(event: bytes) -> TextFrame:
    frame = TextFrame()
    frame.learn(event, json.loads(event[6:]))
    return frame


@pytest.mark.parametrize(
    ("literal", "read"),
    [
        (b'" Lyon"', True),
        (b'"\\u00e9t\\u00e9 \\"ok\\" \\\\"', True),
        ('"été"'.encode(), True),
        ('"😀 中"'.encode(), True),
        (b'""', False),  # no text: parsed (and nothing written for it)
        (b'"a","b"', False),  # two strings: another document
        (b'"a"}', False),
        (b'"tab\there"', False),  # a raw control character: not JSON
        (b'"\\x"', False),  # not an escape of JSON's
        (b'"\xff"', False),  # not UTF-8
        (b'"\xed\xa0\x80"', False),  # a surrogate's bytes: not UTF-8 either
        (b'"\xc3"', False),  # a character cut
        (b'"end\\"', False),  # its closing quote escaped
        (b"7", False),
    ],
)
def test_what_is_read_through_the_frame(literal: bytes, read: bool) -> None:
    frame = _learnt(VLLM)
    event = VLLM.replace(b'" Paris"', literal)
    assert frame.text_of(event) == (literal if read else None)
    assert frame.text_of_run(event + b"\n\n") == (literal if read else None)
    assert frame.text_of_run(event + b"\n\n" + event + b"\n\n") is None  # two events


def test_a_frame_is_learnt_from_an_event_with_text_only() -> None:
    frame = _learnt(VLLM.replace(b'" Paris"', b'""'))  # the role's event
    assert frame.text_of(VLLM) is None


def test_frames_that_change_with_every_event_are_learnt_no_more() -> None:
    frame = TextFrame()
    for number in range(MAX_IDLE_FRAMES + 3):
        event = _event(_chunk("x", obfuscation=str(number)))[:-2]
        assert frame.text_of(event) is None
        frame.learn(event, json.loads(event[6:]))
    assert frame.idle == MAX_IDLE_FRAMES
    assert b'"obfuscation": "3"' in frame.tail  # the last frame learnt


def _translators() -> list[tuple[StreamTranslator, StreamTranslator]]:
    """Each translation twice: the second never learns a frame (it parses each event)."""
    pairs: list[tuple[StreamTranslator, StreamTranslator]] = []
    for make in (
        lambda: anthropic_response.AnthropicStream("m", "msg_1", ("END",)),
        lambda: ollama.OllamaStream("m", chat=True, started=0.0, epoch=0.0),
        lambda: ollama.OllamaStream("m", chat=False, started=0.0, epoch=0.0),
    ):
        framed, parsed = make(), make()
        assert isinstance(parsed, anthropic_response.AnthropicStream | ollama.OllamaStream)
        parsed.frame.idle = MAX_IDLE_FRAMES
        pairs.append((framed, parsed))
    return pairs


def _records(out: bytes) -> list[object]:
    """What a client reads: each SSE event's name and data, or each NDJSON line."""
    if out.startswith(b"event: "):
        names = [line for line in out.split(b"\n") if line.startswith(b"event: ")]
        return [*names, *(json.loads(payload) for payload in sse_payloads(out))]
    return [json.loads(line) for line in out.splitlines()]


TEXTS = st.text(st.characters(codec="utf-8"), max_size=8)
# What a backend might put where the frame expects a text: a text, or any bytes.
FILLINGS = TEXTS.map(lambda text: json.dumps(text).encode()) | st.binary(max_size=12)
EXTRAS = st.dictionaries(
    st.sampled_from(["usage", "error", "system_fingerprint", "created"]),
    st.none() | st.integers(0, 3) | st.text(max_size=3),
    max_size=2,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=4), EXTRAS, st.booleans(), st.lists(FILLINGS))
def test_text_read_through_the_frame_translates_as_parsed(
    texts: list[str], extra: dict[str, Any], space: bool, fillings: list[bytes]
) -> None:
    events = [_event(_chunk(text, **extra), space=space) for text in texts]
    learnt = events[-1][:-2]
    span = content_span(learnt)
    if span is not None:  # the same frame, anything in its place
        events += [
            learnt[: span[0]] + filling + learnt[span[1] :] + b"\n\n" for filling in fillings
        ]
    events += [_event({"choices": [], "usage": {"prompt_tokens": 1}}), b"data: [DONE]\n\n"]
    for framed, parsed in _translators():
        outs = []
        for translator in (framed, parsed):
            out = b"".join(translator.feed(event, 1.0) for event in events)
            outs.append(_records(out + translator.close(None, 2.0)))
        assert outs[0] == outs[1]


def test_a_vllm_stream_is_read_through_its_frame() -> None:
    stream = ollama.OllamaStream("m", chat=True, started=0.0, epoch=0.0)
    events = [_event(_chunk(text), space=False) for text in ("", " The", " Seine", " runs")]
    lines = [stream.feed(event, 1.0) for event in events]
    assert stream.framed and lines[0] == b""  # the last runs were read through the frame
    assert [json.loads(line)["message"]["content"] for line in lines[1:]] == [
        " The",
        " Seine",
        " runs",
    ]
