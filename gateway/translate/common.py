"""What every translation shares: its result, its refusals, and reading untrusted JSON.

A translation is a pure function of the client's document (a dict, parsed by
the endpoint) to the backend's, and back; it never raises on any JSON but
`Untranslatable`, a 400 naming the field that has no counterpart. A field that
can be left out without changing what the model is asked (a cache hint, a
keep-alive) is left out and named in `dropped`, which the client sees in the
answer's `x-gateway-dropped` header: never silently changed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.errors import InvalidRequest

JSONObject = dict[str, Any]
# json.dumps(..., ensure_ascii=False) builds an encoder at each call (a few µs): the
# translations' documents are written by this one, built once (it keeps no state).
json_text = json.JSONEncoder(ensure_ascii=False).encode


def json_bytes(document: object) -> bytes:
    """A document that holds what a client or a backend wrote (a request, tool calls'
    arguments), as compact UTF-8 JSON: orjson writes it in a fraction of the standard
    encoder's time.

    orjson refuses an integer past 64 bits and a lone surrogate, and writes a NaN or an
    infinity as null; so a document it refuses, or whose JSON holds null (which could
    be one), is written by the standard encoder: NaN as NaN, as the client sent it,
    and escaped to ASCII so that a lone surrogate is written too."""
    try:
        written = orjson.dumps(document)
    except TypeError:  # orjson.JSONEncodeError
        written = b"null"
    if b"null" in written:
        return json.dumps(document, separators=(",", ":")).encode()
    return written


def request_bytes(document: object) -> bytes:
    """A translated request, as compact UTF-8 JSON for the backend, or the client's 400.

    orjson writes it, as `json_bytes` does; what orjson refuses (a lone surrogate, an
    integer past 64 bits, nesting past 255 levels) the standard encoder writes, escaped
    to ASCII. A translation may nest a client's schema a level or two deeper than it
    came, past what even that encoder can write (the recursion limit): the client's
    400. No NaN or infinity is here, which orjson would write as null: the body's
    parser refused them (gateway/json_bodies.py)."""
    try:
        return orjson.dumps(document)
    except TypeError:  # orjson.JSONEncodeError
        pass
    try:
        return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        raise InvalidRequest("the request holds a number JSON cannot (NaN, Infinity)") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None


def record_bytes(record: object) -> bytes:
    """A record the translations build themselves (texts, counts, flags, and what a
    backend's chunk held), as compact UTF-8 JSON: orjson writes it in a fraction of the
    standard encoder's time, and a stream writes several.

    What orjson will not write (an integer past 64 bits, a lone surrogate) is written by
    the standard encoder, escaped to ASCII so that it always encodes. (orjson writes a
    NaN as null: a record never holds one, as the chunks are read by `chunk_of`.)"""
    try:
        return orjson.dumps(record)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(record, separators=(",", ":")).encode()


# A stream the backend ended with neither its finish nor [DONE] was cut short: the
# client is told so, not handed a finished answer.
CUT_SHORT = "the backend's stream ended before its answer did (no finish_reason, no [DONE])"


def client_fault(error: JSONObject) -> int | None:
    """The 4xx a backend's error object says it is (its `code`, as vLLM writes a
    too-long prompt's): the client's fault, no failure of the backend's; else None."""
    code = error.get("code")
    if isinstance(code, str) and code.isascii() and code.isdigit():
        code = int(code)
    return code if type(code) is int and 400 <= code < 500 else None


class UntranslatableAnswer(ValueError):
    """A backend's 200 that says nothing the client's API can (a token count of nothing
    counted): the client's 502 in its API's shape, with these words."""


class Untranslatable(InvalidRequest):
    """A request that says something the backend's API cannot: a 400 naming the field."""

    def __init__(self, param: str, why: str) -> None:
        super().__init__(f"{param}: {why}", param=param)


@dataclass(frozen=True)
class Translated:
    """A client's request in the backend's API: where it goes, and what was left out."""

    path: str
    document: JSONObject
    stream: bool
    dropped: tuple[str, ...] = ()
    # A request the gateway answers itself, no backend asked: Ollama's load or unload
    # (a chat without messages, a prompt-less generate), by its done_reason.
    answered: str | None = None


@dataclass
class Dropped:
    """The names of what a translation leaves out, in the order met, each once."""

    names: list[str] = field(default_factory=list)

    def add(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)


def as_object(value: object) -> JSONObject:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def as_text(value: object) -> str:
    return value if isinstance(value, str) else ""


def as_count(value: object) -> int:
    """A token count as an int (0 when absent or not a count)."""
    return value if type(value) is int and value >= 0 else 0


MAX_ARGUMENTS_DEPTH = 200  # a tool call's arguments nested deeper are no object of ours


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number past a double is not JSON")
    return value


# Tool calls' arguments are passed on inside the client's JSON: what is not JSON in them
# (NaN, Infinity, 1e400, which Python's parser reads) is not an object of ours.
_strict_loads = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite).decode


def loads_object(text: object) -> JSONObject | None:
    """A JSON object from a string (tool arguments), or None when it is not one (or not
    JSON, as NaN is not)."""
    if not isinstance(text, str):
        return None
    try:
        value = _strict_loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) and not _unwritable(text, value) else None


def tool_arguments(arguments: object) -> JSONObject | None:
    """A tool call's arguments as an object (a backend writes them as JSON text, or as
    an object), or None when they are not one, or are nested past MAX_ARGUMENTS_DEPTH:
    such a document, parsed near the interpreter's recursion limit, could not be
    written again (the standard encoder's RecursionError; orjson stops at 255). An
    object holding a NaN or an infinity (an answer's parser reads them) is none either:
    it could not be written as JSON."""
    if isinstance(arguments, dict):
        return None if _unwritable(None, arguments) else arguments
    return loads_object(arguments)


def _unwritable(text: str | None, value: object) -> bool:
    """Whether `value` (parsed strictly from `text`, when known) is nested past
    MAX_ARGUMENTS_DEPTH, or holds a number JSON cannot; told without a walk when its
    text was parsed strictly and has fewer brackets."""
    if text is not None and text.count("{") + text.count("[") <= MAX_ARGUMENTS_DEPTH:
        return False
    level: list[tuple[object, int]] = [(value, 1)]
    while level:
        item, depth = level.pop()
        if type(item) is float and not math.isfinite(item):
            return True
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_ARGUMENTS_DEPTH:
            return True
        members = item.values() if isinstance(item, dict) else item
        level.extend((member, depth + 1) for member in members)
    return False


def compact(document: object) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def image_data_url(data: str) -> str:
    """A data: URL for a base64 image, its type told by its first bytes (Ollama sends
    bare base64; OpenAI's image_url wants a URL)."""
    if data.startswith("data:"):
        return data
    for prefix, media in (("/9j/", "jpeg"), ("R0lG", "gif"), ("UklG", "webp")):
        if data.startswith(prefix):
            return f"data:image/{media};base64,{data}"
    return f"data:image/png;base64,{data}"


def sse_events(events: bytes) -> list[bytes]:
    """A run of whole server-sent events, one item per event (line ends made LF, the
    blank line that ends each removed)."""
    if b"\r" in events:
        events = events.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    split = events.split(b"\n\n")
    if not split[-1]:
        split.pop()  # (the usual run: whole events, each ending with its blank line)
    return [event for event in split if event] if b"" in split else split


def sse_data(event: bytes) -> bytes | None:
    """An event's `data:` payload (its data lines joined), or None when it has none; as
    bytes, which `chunk_of` reads without decoding them first."""
    if event.startswith(b"data: ") and b"\n" not in event:  # the usual event: one line
        return event[6:]
    lines = [
        line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


def sse_payload(event: bytes) -> str | None:
    """An event's `data:` payload as text (bytes that are not UTF-8 replaced)."""
    data = sse_data(event)
    return None if data is None else data.decode("utf-8", "replace")


def is_done(data: bytes) -> bool:
    """Whether a `data:` payload is OpenAI's `[DONE]` (surrounding whitespace allowed)."""
    if data == b"[DONE]":
        return True
    return b"[DONE]" in data and data.decode("utf-8", "replace").strip() == "[DONE]"


def sse_payloads(events: bytes) -> list[str]:
    """The `data:` payloads of a run of whole server-sent events, one per event."""
    payloads = (sse_payload(event) for event in sse_events(events))
    return [payload for payload in payloads if payload is not None]


# 19 digits in a row: maybe an integer past 64 bits (orjson reads one as a float).
# Bytes are checked with their digits made zeros, then a search: a tenth of the time
# a regular expression's search takes (about 1.6 µs an event in a loop).
_LONG_DIGITS = re.compile(r"[0-9]{19}")
_DIGITS_TO_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_ZEROS = b"0" * 19


def _long_digits(payload: str | bytes) -> bool:
    if isinstance(payload, bytes):
        return _ZEROS in payload.translate(_DIGITS_TO_ZEROS)
    return _LONG_DIGITS.search(payload) is not None


def chunk_of(payload: str | bytes) -> JSONObject | None:
    """A stream chunk's JSON object (None for `[DONE]` or what is not an object).

    orjson reads it in a fraction of the standard parser's time. What orjson refuses
    (NaN, a lone surrogate, a number beyond a double, bytes that are not UTF-8) is read
    by the standard parser, which keeps what it always did (bytes decoded with what is
    not UTF-8 replaced); where both read a document, they read the same. An integer past
    64 bits, which orjson would read as a float, is 19 digits or more: a payload with
    such a run of digits goes to the standard parser too."""
    try:
        if _long_digits(payload):
            raise orjson.JSONDecodeError("read by the standard parser", "", 0)
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # (nested past what either reads)
            return None
    return value if type(value) is dict else None


def first_choice(document: JSONObject) -> JSONObject:
    choices = as_list(document.get("choices"))
    return as_object(choices[0]) if choices else {}


def openai_error_message(status: int, data: bytes) -> str:
    """The words of a backend's error body, whatever its shape."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        text = data.decode("utf-8", "replace").strip()
        return text[:1000] or f"the backend answered HTTP {status}"
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for key in ("error", "detail", "message"):
            if isinstance(document.get(key), str):
                return str(document[key])
    return f"the backend answered HTTP {status}"
