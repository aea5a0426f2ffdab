"""The translations never raise on any JSON: a request either translates or is refused
with a 400 naming a field (Untranslatable); an answer, a stream's events or an error
body of any shape always gives something the client's API can carry."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.translate import anthropic_request, anthropic_response, ollama_request
from gateway.translate import ollama_response as ollama
from gateway.translate.common import Untranslatable, UntranslatableAnswer
from gateway.translate.table import TRANSLATIONS, Exchange

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.sampled_from(["\ud800", "a\udfffb"])  # lone surrogates, as JSON's escapes say
)
KEYS = st.sampled_from(
    [
        "model",
        "messages",
        "role",
        "content",
        "images",
        "tool_calls",
        "function",
        "name",
        "arguments",
        "options",
        "format",
        "tools",
        "stream",
        "prompt",
        "system",
        "raw",
        "suffix",
        "input",
        "type",
        "text",
        "source",
        "tool_use_id",
        "input_schema",
        "tool_choice",
        "stop_sequences",
        "max_tokens",
        "choices",
        "delta",
        "message",
        "finish_reason",
        "usage",
        "prompt_tokens",
        "completion_tokens",
        "index",
        "id",
        "data",
        "embedding",
        "error",
        "count",
        "tokens",
        "stop_reason",
        "num_predict",
    ]
) | st.text(max_size=5)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=30,
)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=8)
REQUESTS = [
    ollama_request.chat,
    ollama_request.generate,
    ollama_request.embed,
    ollama_request.embeddings,
    anthropic_request.messages,
    anthropic_request.count_tokens,
]


@settings(max_examples=300, deadline=None)
@given(OBJECTS)
def test_requests_translate_or_name_a_field(document: dict[str, Any]) -> None:
    for translate in REQUESTS:
        try:
            translated = translate(document)
        except Untranslatable as refused:
            assert refused.param and refused.status_code == 400
        else:
            json.dumps(translated.document)  # the backend's body can be written


@settings(max_examples=300, deadline=None)
@given(OBJECTS)
def test_answers_always_translate(document: dict[str, Any]) -> None:
    exchange = Exchange("m", 0.0, 0.0, ("END",))
    for translation in TRANSLATIONS.values():
        try:
            answer = translation.answer(document, exchange, 1.0)
        except UntranslatableAnswer:  # (the client's 502, its typed refusal)
            continue
        json.dumps(answer)
        if translation.whole_as_stream is not None:
            translation.whole_as_stream(answer)
        json.dumps(translation.error(400, json.dumps(document)))
    anthropic_response.error_answer(500, json.dumps(document).encode())


EVENTS = st.lists(
    OBJECTS.map(lambda d: b"data: " + json.dumps(d).encode() + b"\n\n")
    | st.just(b"data: [DONE]\n\n")
    | st.binary(max_size=40),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.none() | st.text(max_size=10))
def test_streams_always_translate(runs: list[bytes], failure: str | None) -> None:
    streams = [
        anthropic_response.AnthropicStream("m", "msg_1", ("END",)),
        ollama.OllamaStream("m", chat=True, started=0.0, epoch=0.0),
        ollama.OllamaStream("m", chat=False, started=0.0, epoch=0.0),
    ]
    for stream in streams:
        out = b"".join(stream.feed(run, 1.0) for run in runs) + stream.close(failure, 2.0)
        assert isinstance(out, bytes)
        records = [
            line.removeprefix(b"data: ")
            for line in out.splitlines()
            if line and not line.startswith(b"event: ")
        ]
        for record in records:  # each line a client can read
            json.loads(record.decode())
