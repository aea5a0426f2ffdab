"""Token usage read out of a backend's answer, without parsing the whole answer."""

from __future__ import annotations

import json
import re

_JSON = json.JSONDecoder()
_AFTER_KEY = re.compile(rb"\s*:\s*")
USAGE_OBJECT_BYTES = 4096


def extract_usage(data: bytes) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) from the last `"usage"` in a JSON answer or SSE tail.

    Only the usage object is parsed, not the whole answer (a few µs on every
    request). A `"usage"` inside a string would be escaped (`\\"usage\\"`), so
    the last bare one is the answer's own.
    """
    position = data.rfind(b'"usage"')
    if position < 0:
        return None
    colon = _AFTER_KEY.match(data, position + len(b'"usage"'))
    if colon is None or not colon.group().strip():
        return None
    value = data[colon.end() : colon.end() + USAGE_OBJECT_BYTES].decode("utf-8", "replace")
    try:
        usage, _ = _JSON.raw_decode(value)
    except ValueError:
        return None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    if type(prompt) is not int or type(completion) is not int:
        return None
    return prompt, completion
