"""Token usage read out of a backend's answer, without parsing the whole answer."""

from __future__ import annotations

import json
import re

_JSON = json.JSONDecoder()
_AFTER_KEY = re.compile(rb"\s*:\s*")
USAGE_OBJECT_BYTES = 4096
# Ollama's own API counts tokens in its last record: prompt_eval_count, eval_count.
_OLLAMA_PROMPT = re.compile(rb'"prompt_eval_count"\s*:\s*(\d+)')
_OLLAMA_EVAL = re.compile(rb'"eval_count"\s*:\s*(\d+)')


def _ollama_counts(data: bytes) -> tuple[int, int] | None:
    """(prompt_eval_count, eval_count) of an Ollama answer's last record, if it has them."""
    last = data[-USAGE_OBJECT_BYTES:]
    prompt = list(_OLLAMA_PROMPT.finditer(last))
    completion = list(_OLLAMA_EVAL.finditer(last))
    if not prompt and not completion:
        return None
    return (
        int(prompt[-1].group(1)) if prompt else 0,
        int(completion[-1].group(1)) if completion else 0,
    )


def extract_usage(data: bytes) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) from the last `"usage"` in a JSON answer or SSE tail.

    Only the usage object is parsed, not the whole answer (a few µs on every
    request). A `"usage"` inside a string would be escaped (`\\"usage\\"`), so
    the last bare one is the answer's own.
    """
    position = data.rfind(b'"usage"')
    if position < 0:
        return _ollama_counts(data)
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
    # Chat/completions name them prompt/completion; the Responses API and Anthropic's
    # Messages API input/output.
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    else:
        prompt, completion = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    if type(prompt) is not int or type(completion) is not int:
        return None
    return prompt, completion


# A name without escapes (the JSON string's raw text); a name with one is left uncounted.
_MODEL_VALUE = re.compile(rb'\s*:\s*"([^"\\]{1,512})"')


def extract_model(data: bytes, *, last: bool = False) -> str | None:
    """The `model` an answer names: its first bare `"model"` key (a whole answer puts
    it before any content), or with `last` a stream tail's last one (the last
    chunk's). A `"model"` inside a string would be escaped, so a bare one is a key.
    None: no name (or not a plain string)."""
    position = data.rfind(b'"model"') if last else data.find(b'"model"')
    if position < 0:
        return None
    value = _MODEL_VALUE.match(data, position + 7)
    if value is None:
        return None
    return value.group(1).decode("utf-8", "replace")
