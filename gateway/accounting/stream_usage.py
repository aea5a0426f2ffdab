"""Tokens of every stream: ask the backend for usage the client did not ask for, and
take it out again before the client sees it.

A streamed chat or completion reports its tokens only when the request says
`stream_options: {"include_usage": true}`; the openai SDK's and LangChain's
default `stream()` do not, so without this most streamed tokens would go
uncounted. For such a request the gateway adds the option; the backend then
ends its stream with a usage-only chunk (`"choices": []`) and, like OpenAI,
may add `"usage": null` to every other chunk. Both are removed from what the
client receives, so its stream is the one it would have had. The gateway
reads the usage from the unfiltered tail, as for any stream.

The option is spliced into the client's bytes (gateway/splice/json_members.py):
the rest of the body reaches the backend as the client wrote it.

A backend that refuses the option (400) is asked again without it, and is
remembered as refusing it (gateway/proxy/forward.py).
"""

from __future__ import annotations

import re
from typing import Any

from gateway.splice.json_members import (
    Member,
    decoded,
    encoded,
    object_at,
    spliced,
    whole_object,
)

# The APIs whose streams report usage only when asked.
USAGE_OPTION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})

_EVENT = re.compile(rb".*?(?:\r\n\r\n|\n\n|\r\r|\Z)", re.DOTALL)
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,\s*')
_OPENING = re.compile(rb"[ \t\n\r]*\{[ \t\n\r]*(\}?)")
_ASKED = b'"stream_options":{"include_usage":true}'
# An escape that could spell a letter or "_" of a key (\u0041 to \u007f): clients
# escape only other characters (é as \u00e9, controls as \u0000 to \u001f).
_ESCAPED_ASCII = re.compile(rb"\\u00[4-7][0-9a-fA-F]")


def asked_for_usage(document: dict[str, Any]) -> bool:
    """Whether the client's own request asks for the stream's usage."""
    options = document.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def with_usage_asked(body: bytes) -> bytes:
    """The request body with `stream_options.include_usage` set, the rest byte for byte:
    set inside each top-level `stream_options` object (its other options kept), a
    `stream_options` that is not an object replaced, or the option added as the
    body's first member. A body that is not a JSON object is a 400."""
    first = _as_first_member(body)
    if first is not None:
        return first
    text, codec = decoded(body)
    document = whole_object(text)
    options = document.named("stream_options")
    if not options:
        comma = "," if document.members else ""
        at = document.opening + 1
        edits = [(at, at, f'"stream_options":{{"include_usage":true}}{comma}')]
    else:
        edits = [edit for member in options for edit in _usage_edits(text, member)]
    return encoded(spliced(text, edits), codec)


def _as_first_member(body: bytes) -> bytes | None:
    """The usual case, without a scan (this runs for most streams): a UTF-8 body in which
    nothing, at any depth, can be a `stream_options` key (no such text, no escape
    that could spell one) gets the option as its first member. Its JSON was
    checked when the request was read (bodies.parse_target); this does not check it
    again, and a text that is not JSON stays as wrong as it was."""
    opening = _OPENING.match(body)
    if opening is None or b"\x00" in body[:4]:  # not UTF-8 (UTF-16 or 32 has zero bytes)
        return None
    if b"stream_options" in body or _ESCAPED_ASCII.search(body):
        return None
    at = body.index(b"{") + 1
    return body[:at] + _ASKED + (b"" if opening.group(1) else b",") + body[at:]


def _usage_edits(text: str, options: Member) -> list[tuple[int, int, str]]:
    if text[options.start] != "{":  # null, or not an object at all
        return [(options.start, options.end, '{"include_usage":true}')]
    inner = object_at(text, options.start)
    flags = inner.named("include_usage")
    if flags:
        return [(flag.start, flag.end, "true") for flag in flags]
    comma = "," if inner.members else ""
    return [(options.start + 1, options.start + 1, f'"include_usage":true{comma}')]


def without_usage(events: bytes) -> bytes:
    """Whole SSE events with the usage the gateway asked for taken out: the usage-only
    chunk dropped, `"usage": null` removed from the others. Anything else is untouched
    (a `"usage"` inside a text is escaped, so it never matches)."""
    if b'"usage"' not in events:
        return events
    kept = []
    for match in _EVENT.finditer(events):
        event = match.group()
        if not event:
            continue
        if _USAGE_OBJECT.search(event) and _EMPTY_CHOICES.search(event):
            continue
        kept.append(_NULL_USAGE.sub(b"", event))
    return b"".join(kept)
