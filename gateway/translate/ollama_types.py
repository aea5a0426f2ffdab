"""Ollama's request typed as Ollama's Go server types it, before any of it is translated.

Ollama reads a request into Go structs (`api.ChatRequest`, `api.GenerateRequest`,
`api.EmbedRequest`) and its `options` with `api.Options.FromMap`: a value of the wrong
type never reaches a model there. Here it would reach an OpenAI backend, which refuses
it in the name of a field the client never wrote (`max_tokens` for `num_predict`), or
takes it silently (`"stream": "no"` streamed). So each field the translation reads is
typed first, and a wrong one is the client's 400 naming it (`messages[0].images`).
null is absent, as Go's decoder leaves a field untouched for it.
"""

from __future__ import annotations

import math
import sys
from typing import cast

from gateway.translate.common import Untranslatable

# Every option of Ollama's `api.Options` and `api.Runner` (api/types.go), with the kind
# of its Go field, which `FromMap` checks. A name not here Ollama ignores with a warning.
OPTION_KINDS = {
    # Options: predict options used at runtime
    "num_keep": "integer",
    "seed": "integer",
    "num_predict": "integer",
    "top_k": "integer",
    "top_p": "float32",
    "min_p": "float32",
    "typical_p": "float32",
    "repeat_last_n": "integer",
    "temperature": "float32",
    "repeat_penalty": "float32",
    "presence_penalty": "float32",
    "frequency_penalty": "float32",
    "stop": "array",
    # Runner: set when the model is loaded
    "num_ctx": "integer",
    "num_batch": "integer",
    "num_gpu": "integer",
    "main_gpu": "integer",
    "use_mmap": "boolean",
    "num_thread": "integer",
}
_INT64 = 2**63
# An integer option's int, or a float option's float, within int64 (NaN fails both
# comparisons): taken as it is; anything else is typed by option_value.
_USUAL: dict[str, type] = {"integer": int, "float32": float}
_BOUND = 2**63 - 1


def _refused(name: str, why: str) -> Untranslatable:
    return Untranslatable(f"options.{name}", f'option "{name}" {why}')


def option_value(name: str, kind: str, value: object) -> object:
    """An option's value as `FromMap` reads it (a number for a float32, a number made
    whole toward zero for an integer, as Go's conversion, a list of strings for an
    array), or its 400 in Ollama's words.

    Real Ollama answers these with a 500 (FromMap's error comes back as a server
    error); the mistake is the client's, so here they are a 400. Two values are refused
    that Ollama takes in: an integer outside int64, which Go's conversion would turn
    silently into a meaningless value, not the one the client wrote; and NaN or an
    infinity, which Ollama's JSON decoder refuses before FromMap (as it refuses a
    number past a double)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _refused(name, "must be a finite number")
    if kind == "array":
        if not isinstance(value, list):
            raise _refused(name, "must be of type array")
        if not all(isinstance(item, str) for item in value):
            raise _refused(name, "must be of an array of strings")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _refused(name, "must be of type boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refused(name, f"must be of type {kind}")
    if kind == "integer":
        if not -_INT64 <= value < _INT64:
            raise _refused(name, "must be of type integer")
        return int(value)
    if abs(value) > sys.float_info.max:  # (an integer literal past a double)
        raise _refused(name, "must be a finite number")
    return value


def typed_options(options: object) -> dict[str, object]:
    """The options, those Ollama knows typed as `FromMap` types them; an unknown one is
    kept as it is (Ollama ignores it), but NaN or an infinity is refused there too
    (Ollama's decoder refuses the whole body). null is left out: Ollama's default."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise Untranslatable("options", "must be an object")
    typed: dict[str, object] = {}
    for name, value in options.items():
        kind = OPTION_KINDS.get(name)
        if value is None:
            continue
        if kind is not None:
            # (the usual values, told at once: a request has a few options, each typed)
            usual = _USUAL.get(kind)
            if type(value) is usual and -_BOUND < cast(float, value) < _BOUND:
                typed[name] = value
            else:
                typed[name] = option_value(name, kind, value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise _refused(name, "must be a finite number")
        else:
            typed[name] = value
    return typed


def text(document: dict[str, object], field: str, where: str = "") -> str | None:
    """A string field (Go's `string`), None when absent or null."""
    value = document.get(field)
    if value is None or isinstance(value, str):
        return value
    raise Untranslatable(f"{where}{field}", "must be a string")


def flag(document: dict[str, object], field: str) -> bool | None:
    """A boolean field (Go's `bool` or `*bool`), None when absent or null."""
    value = document.get(field)
    if value is None or isinstance(value, bool):
        return value
    raise Untranslatable(field, "must be true or false")


def texts(document: dict[str, object], field: str, where: str = "") -> list[str]:
    """A list of strings (Go's `[]ImageData`, base64 text), empty when absent or null."""
    value = document.get(field)
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise Untranslatable(f"{where}{field}", "must be a list of strings")


def whole(document: dict[str, object], field: str) -> int | None:
    """An integer field (Go's `int`: its decoder refuses a fraction, and 1.0 too, and
    what is outside int64), None when absent or null."""
    value = document.get(field)
    if value is None:
        return None
    if type(value) is int and -_INT64 <= value < _INT64:
        return value
    raise Untranslatable(field, "must be an integer")
