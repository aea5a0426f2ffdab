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

A backend that refuses the option (400) is asked again without it, and is
remembered as refusing it (gateway/proxy/forward.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

# The APIs whose streams report usage only when asked.
USAGE_OPTION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})

_EVENT = re.compile(rb".*?(?:\r\n\r\n|\n\n|\r\r|\Z)", re.DOTALL)
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,\s*')


def asked_for_usage(document: dict[str, Any]) -> bool:
    """Whether the client's own request asks for the stream's usage."""
    options = document.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def with_usage_asked(body: bytes) -> bytes:
    """The request body with `stream_options.include_usage` set (other options kept)."""
    document = json.loads(body)
    options = document.get("stream_options")
    document["stream_options"] = {**(options if isinstance(options, dict) else {})}
    document["stream_options"]["include_usage"] = True
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


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
