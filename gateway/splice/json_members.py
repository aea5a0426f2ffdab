"""Where the members of a JSON object sit in its text, so that one can be replaced or
added without re-encoding the rest.

A body parsed and dumped again is not the client's: `1e999` comes out as
`Infinity` (not JSON), a lone surrogate (`"\\ud800"`, valid JSON) cannot be
encoded at all, and every number, escape and space is rewritten. So the proxy
never re-encodes a body: it finds the span of a value here and splices.

Keys are compared decoded (`"mod\\u0065l"` is `model`); every duplicate of a
key is reported (Python's parser keeps the last). Only the members of the
object asked about are listed, never a nested one of the same name.

Each value is checked by the standard parser's C scanner (its rules, its
errors), so a scan costs about what `json.loads` does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import NamedTuple

from shared.errors import InvalidRequest

# The standard parser's C scanner of one value (its rules, its errors). It keeps no
# state between calls: its memo of keys is cleared at the end of each.
_SCAN = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed: C's signature
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SPACES = " \t\n\r"
_BIG_ENDIAN_MARKS = (b"\xfe\xff", b"\x00\x00\xfe\xff")


class Member(NamedTuple):
    """One member of an object: its decoded key and where its value sits."""

    key: str
    start: int  # the value's first character
    end: int  # just past the value


@dataclass(frozen=True)
class JsonObject:
    """An object's members in order, and where it opens and ends."""

    opening: int  # the index of its "{"
    end: int  # just past its "}"
    members: tuple[Member, ...]

    def named(self, key: str) -> list[Member]:
        return [member for member in self.members if member.key == key]


def decoded(body: bytes) -> tuple[str, str]:
    """The body as text, and the codec that gives back the same bytes.

    The encoding is detected as `json.loads` does (UTF-8, or UTF-16/32 by their
    byte order); a byte order mark stays in the text, so it is written back."""
    codec: str = json.detect_encoding(body)
    if codec in ("utf-16", "utf-32"):
        codec += "-be" if body.startswith(_BIG_ENDIAN_MARKS) else "-le"
    try:
        return body.decode(codec, "surrogatepass"), codec
    except UnicodeDecodeError as error:
        raise InvalidRequest(f"the request body is not valid JSON: {error}") from None


def encoded(text: str, codec: str) -> bytes:
    return text.encode(codec, "surrogatepass")


def spliced(text: str, edits: list[tuple[int, int, str]]) -> str:
    """`text` with each (start, end) span replaced by its new text; spans do not overlap."""
    pieces: list[str] = []
    done = 0
    for start, end, new in sorted(edits):
        pieces += (text[done:start], new)
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


def whole_object(text: str) -> JsonObject:
    """The members of the object that is the whole text (a request body), or a 400."""
    start = 1 if text.startswith("\ufeff") else 0
    found = object_at(text, start)
    if _skip_whitespace(text, found.end) != len(text):
        raise InvalidRequest("the request body is not valid JSON: extra data after the object")
    return found


def object_at(text: str, start: int) -> JsonObject:
    """The members of the object at `start` (whitespace before it allowed), or a 400."""
    try:
        return _scan_object(text, _skip_whitespace(text, start))
    except ValueError as error:  # json.JSONDecodeError among them
        raise InvalidRequest(f"the request body is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None


def _skip_whitespace(text: str, index: int) -> int:
    if text[index : index + 1] not in _SPACES:  # most often: compact JSON (or the end)
        return index
    match = _WHITESPACE.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _scan_object(text: str, index: int) -> JsonObject:
    if text[index : index + 1] != "{":
        raise InvalidRequest("the request body must be a JSON object")
    opening = index
    members: list[Member] = []
    index = _skip_whitespace(text, index + 1)
    if text[index : index + 1] == "}":
        return JsonObject(opening, index + 1, ())
    while True:
        key, index = _key(text, index)
        start = _skip_whitespace(text, index)
        end = _value_end(text, start)
        members.append(Member(key, start, end))
        index = _skip_whitespace(text, end)
        delimiter = text[index : index + 1]
        if delimiter == "}":
            return JsonObject(opening, index + 1, tuple(members))
        if delimiter != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
        index = _skip_whitespace(text, index + 1)


def _key(text: str, index: int) -> tuple[str, int]:
    """The key at `index` and the index just past its ':'."""
    if text[index : index + 1] != '"':
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
    key, index = _SCAN(text, index)  # a string: its '"' is checked above
    index = _skip_whitespace(text, index)
    if text[index : index + 1] != ":":
        raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
    return key, index + 1


def _value_end(text: str, index: int) -> int:
    try:
        end: int = _SCAN(text, index)[1]
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None
    return end
