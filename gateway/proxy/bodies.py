"""What the proxy reads of a request body, and the one change it may make to it.

A body is forwarded byte for byte. The proxy reads `model` (to route), `stream`
(to relay), and for the Responses API `previous_response_id` (to send a
conversation back to the backend that holds it). JSON bodies are read with the
standard parser; a `multipart/form-data` body (audio uploads: the model is a
form field) with python-multipart, which also says where the model's value
sits so that a `backend_model` can be spliced in without re-encoding the file.
A form field sent twice counts by its last value, as the backends' form parsers
(Starlette's, so vLLM's) read it; a form has at most MAX_MULTIPART_PARTS parts.

Renaming the model splices the new value into the client's bytes: the body is
never parsed and dumped again (see json_members for why).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartState, parse_options_header

from gateway.accounting.stream_usage import asked_for_usage
from gateway.json_bodies import parse_json_object, validate
from gateway.splice.json_members import (
    decoded,
    encoded,
    spliced,
    whole_object,
)
from shared.errors import InvalidRequest, PayloadTooLarge

MAX_MODEL_NAME = 256
MAX_FIELD_BYTES = 4096  # a form field the proxy reads (model, stream) is short
MAX_MULTIPART_PARTS = 1000  # as Starlette's form parser: an upload has a handful
_FORM_FIELDS = frozenset({"model", "stream"})
# The members of a JSON body that json_target reads.
READ_MEMBERS = (
    "model",
    "stream",
    "previous_response_id",
    "stream_options",
    "user",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "options",
)
# Where each API says how many tokens the answer may have (Ollama: options.num_predict).
_MAX_TOKENS_MEMBERS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
EMPTY_HINT = "send a JSON object with a model"
_SURROGATE = re.compile("[\ud800-\udfff]")


class ProxiedRequest(BaseModel):
    """What the gateway reads of an OpenAI request; every other field passes through untouched."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(
        min_length=1, max_length=MAX_MODEL_NAME, description="Which model to route to."
    )
    stream: StrictBool = Field(False, description="Stream the answer as server-sent events.")


@dataclass(frozen=True)
class Target:
    """The routing facts of one request body."""

    model: str
    stream: bool = False
    previous_response_id: str | None = None
    # Where the model's value sits in a multipart body (start, end), for renaming it.
    model_span: tuple[int, int] | None = None
    usage_asked: bool = False  # stream_options.include_usage, as the client sent it
    # The answer's most tokens, as the request bounds them (max_tokens times n), if it does.
    max_tokens: int | None = None
    # The parsed JSON body, for the affinity key (gateway/routing/prefix_key.py), which
    # only the `auto` strategy reads, and only when there is a choice: computed then.
    members: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    # Whether `members` is the whole body (a translation reuses it) rather than only the
    # READ_MEMBERS a large body's child parser hands over.
    whole_body: bool = field(default=False, compare=False, repr=False)


def _checked(model: object, stream: object) -> Target:
    if type(model) is str and 0 < len(model) <= MAX_MODEL_NAME and type(stream) is bool:
        return Target(model, stream)
    if model is None:
        raise InvalidRequest("you must provide a model parameter", param="model")
    checked = validate(ProxiedRequest, {"model": model, "stream": stream})
    return Target(checked.model, checked.stream)


def parse_json_target(body: bytes, stream_default: bool = False, strict: bool = False) -> Target:
    """Read `model` and `stream` (and `previous_response_id`) of a JSON body (`strict`:
    see parse_json_object)."""
    document = parse_json_object(body, empty_hint=EMPTY_HINT, strict=strict)
    return json_target(document, stream_default)


def json_target(
    document: dict[str, Any], stream_default: bool = False, *, whole_body: bool = True
) -> Target:
    """The target of a JSON body's members (all of them, or only READ_MEMBERS: then
    `whole_body` is false)."""
    # The usual request is checked without pydantic (a few µs on every request);
    # anything else is validated in full, for the exact error message.
    target = _checked(document.get("model"), document.get("stream", stream_default))
    previous = document.get("previous_response_id")
    if previous is not None and (type(previous) is not str or not previous):
        raise InvalidRequest("previous_response_id must be a string", param="previous_response_id")
    _refuse_lone_surrogates(target.model, "model")
    if previous is not None:
        _refuse_lone_surrogates(previous, "previous_response_id")
    usage_asked = target.stream and asked_for_usage(document)
    return Target(
        target.model,
        target.stream,
        previous,
        usage_asked=usage_asked,
        max_tokens=requested_tokens(document),
        members=document,
        whole_body=whole_body,
    )


def requested_tokens(document: dict[str, Any]) -> int | None:
    """The most tokens the answer may have, if the request says (for the client's token
    limits: what it reserves). Not validated here: the backend judges the values."""
    bound = None
    for name in _MAX_TOKENS_MEMBERS:
        value = document.get(name)
        if type(value) is int and value >= 0:
            bound = value
            break
    if bound is None:
        options = document.get("options")
        if type(options) is dict:
            value = options.get("num_predict")
            bound = value if type(value) is int and value >= 0 else None
    if bound is None:
        return None
    choices = document.get("n")
    return bound * choices if type(choices) is int and 1 < choices <= 128 else bound


def _refuse_lone_surrogates(value: str, param: str) -> None:
    """A value the gateway keeps or looks up must be text it can encode: `"\\ud800"` is
    valid JSON, but no UTF-8 (a database or a log) can hold it."""
    if not value.isascii() and _SURROGATE.search(value):
        raise InvalidRequest(f"{param} is not valid Unicode (a lone surrogate)", param=param)


def is_form(content_type: str | None) -> bool:
    return content_type is not None and content_type.lower().startswith("multipart/form-data")


class _FormReader:
    """Collects the short fields the proxy reads, with their value's place in the body.

    A field sent twice is read by its last part (the earlier value and place dropped)."""

    def __init__(self) -> None:
        self.header_name = b""
        self.header_value = b""
        self.field: str | None = None
        self.parts = 0
        self.values: dict[str, bytearray] = {}
        self.spans: dict[str, tuple[int, int]] = {}

    def on_part_begin(self) -> None:
        self.field = None
        self.parts += 1
        if self.parts > MAX_MULTIPART_PARTS:
            raise PayloadTooLarge(
                f"the multipart/form-data body has more than {MAX_MULTIPART_PARTS} parts"
            )

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            _, options = parse_options_header(self.header_value)
            name = options.get(b"name", b"").decode("utf-8", "replace")
            if name in _FORM_FIELDS and b"filename" not in options:
                self.field = name
                self.values[name] = bytearray()  # the last part of a name wins
                self.spans.pop(name, None)
        self.header_name = self.header_value = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.field is None:
            return
        value = self.values.setdefault(self.field, bytearray())
        value += data[start:end]
        if len(value) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"the form field {self.field!r} is too long", param=self.field)
        first = self.spans.get(self.field, (start, start))[0]
        self.spans[self.field] = (first, end)


def parse_form_target(body: bytes, content_type: str) -> Target:
    """Read `model` and `stream` of a multipart/form-data body (an audio upload)."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidRequest("the multipart/form-data body has no boundary")
    reader = _FormReader()
    callbacks = {
        name: getattr(reader, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_part_data",
        )
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as error:
        raise InvalidRequest(f"the multipart/form-data body is malformed: {error}") from None
    if parser.state != MultipartState.END:
        raise InvalidRequest(
            "the multipart/form-data body is malformed: it ends before its last part"
        )
    model = reader.values.get("model")
    span = reader.spans.get("model")
    if span is not None and (model is None or body[span[0] : span[1]] != bytes(model)):
        span = None  # the parser handed the value over from its own buffer: not renameable
    stream = reader.values.get("stream", bytearray(b"false")).decode("latin-1").strip().lower()
    if stream not in ("true", "false"):
        raise InvalidRequest("stream must be true or false", param="stream")
    target = _checked(
        None if model is None else model.decode("utf-8", "replace").strip(), stream == "true"
    )
    return Target(target.model, target.stream, model_span=span)


def parse_target(body: bytes, content_type: str | None, stream_default: bool = False) -> Target:
    if is_form(content_type):
        assert content_type is not None
        return parse_form_target(body, content_type)
    return parse_json_target(body, stream_default)


def parse_strict_target(
    body: bytes, content_type: str | None, stream_default: bool = False
) -> Target:
    """parse_target for an API that refuses NaN, Infinity and 1e400 (ForwardedAPI's
    `strict_numbers`)."""
    if is_form(content_type):
        assert content_type is not None
        return parse_form_target(body, content_type)
    return parse_json_target(body, stream_default, strict=True)


def with_model(body: bytes, model: str, span: tuple[int, int] | None = None) -> bytes:
    """The body with `model` replaced: for a backend that calls the model by another
    name (`backend_model`). Only the model's value changes: in a form at `span` (the
    audio left as it is), in JSON the value of every top-level `model` member (the
    standard parser reads the last; the others are renamed for a parser that reads the
    first). A body that cannot be renamed is a 400."""
    if span is not None:
        start, end = span
        return body[:start] + model.encode() + body[end:]
    if body.startswith(b"--"):  # a form whose model the parser could not place
        raise InvalidRequest("the model field of this form cannot be renamed", param="model")
    text, codec = decoded(body)
    found = whole_object(text).named("model")
    if not found:
        raise InvalidRequest("the request body has no model to rename", param="model")
    value = json.dumps(model)
    return encoded(spliced(text, [(m.start, m.end, value) for m in found]), codec)
