"""Ollama's requests (`/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`) in
OpenAI's API, for a backend that speaks only `/v1`.

Chat goes to `/v1/chat/completions`; generate too (Ollama applies the model's
chat template to a prompt), or to `/v1/completions` when `raw` asks for the
prompt as it is; the embeddings to `/v1/embeddings`. Ollama streams unless told
not to. What Ollama tunes that OpenAI cannot say (`options.num_ctx`,
`keep_alive`, ...) is dropped and named.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.translate.common import (
    Dropped,
    JSONObject,
    Translated,
    Untranslatable,
    as_object,
    as_text,
    compact,
    image_data_url,
)
from gateway.translate.ollama_types import flag, text, texts, typed_options, whole

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"

# Ollama's options that OpenAI's API has, under their OpenAI names; the others Ollama
# knows (`num_ctx`, `top_k`, ...) have no counterpart there, and are dropped and named.
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "num_predict": "max_tokens",
}
# A zero keep_alive as Go's time.ParseDuration reads one ("0", "0s", "0m0s", "0.0h").
_ZERO_DURATION = re.compile(r"[+-]?(?:0|(?:(?:0+\.?0*|\.0+)(?:ns|us|µs|μs|ms|s|m|h))+)")
# Top-level fields that change nothing the model is asked: dropped without a word in
# the header would hide them, so they are named too; `stream` and `model` are read.
_IGNORED = ("keep_alive", "think", "context", "template", "truncate", "logprobs")


def _options(document: JSONObject, into: JSONObject, dropped: Dropped) -> None:
    """The options in OpenAI's names, each typed first as Ollama types it (a wrong type
    is a 400 even for one dropped: Ollama would refuse it too)."""
    for name, value in typed_options(document.get("options")).items():
        if name not in _OPTIONS:
            dropped.add(f"options.{name}")
        # Ollama limits the output only when num_predict > 0 (its runners: `if
        # seq.numPredict > 0 && seq.numPredicted >= seq.numPredict`): 0 and below (-1
        # "until done", -2 "until the context is full") are OpenAI's default, no limit.
        elif not (name == "num_predict" and isinstance(value, int) and value <= 0):
            into[_OPTIONS[name]] = value


def _response_format(value: object) -> JSONObject | None:
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": value}}
    raise Untranslatable("format", 'must be "json" or a JSON schema')


def _common(document: JSONObject, dropped: Dropped) -> JSONObject:
    out: JSONObject = {"model": document.get("model")}
    stream = flag(document, "stream")
    out["stream"] = True if stream is None else stream
    _options(document, out, dropped)
    response_format = _response_format(document.get("format"))
    if response_format is not None:
        out["response_format"] = response_format
    for name in _IGNORED:
        if name in document:
            dropped.add(name)
    return out


def _tools(value: object) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise Untranslatable("tools", "must be a list")
    tools = []
    for index, tool in enumerate(value):
        function = as_object(tool).get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise Untranslatable(f"tools[{index}].function", "needs a name")
        tools.append({"type": "function", "function": function})
    return tools


class _CallIds:
    """Ollama's tool calls have no ids; OpenAI's tool messages must name one. Each call
    gets one, and each tool message answers the oldest unanswered call of its name (or
    the oldest unanswered one)."""

    def __init__(self) -> None:
        self.open: list[tuple[str, str]] = []  # (id, name), unanswered
        self.made = 0

    def new(self, name: str) -> str:
        self.made += 1
        call_id = f"call_{self.made}"
        self.open.append((call_id, name))
        return call_id

    def answer(self, name: str) -> str:
        for index, (call_id, called) in enumerate(self.open):
            if not name or called == name:
                del self.open[index]
                return call_id
        if self.open:
            return self.open.pop(0)[0]
        self.made += 1
        return f"call_{self.made}"


def _content(words: str, images: list[str]) -> str | list[JSONObject]:
    if not images:
        return words
    parts: list[JSONObject] = [{"type": "text", "text": words}] if words else []
    for image in images:
        parts.append({"type": "image_url", "image_url": {"url": image_data_url(image)}})
    return parts


def _message(message: object, index: int, ids: _CallIds, dropped: Dropped) -> JSONObject:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise Untranslatable(where, "must be an object")
    role = text(message, "role", f"{where}.")
    role = role.lower() if role else role  # (as Ollama's Message.UnmarshalJSON: "User")
    if role not in ("system", "user", "assistant", "tool"):
        raise Untranslatable(f"{where}.role", "must be system, user, assistant or tool")
    content = text(message, "content", f"{where}.") or ""
    out: JSONObject = {
        "role": role,
        "content": _content(content, texts(message, "images", f"{where}.")),
    }
    if message.get("thinking"):
        dropped.add(f"{where}.thinking")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise Untranslatable(f"{where}.tool_calls", "must be a list")
    if role == "assistant" and tool_calls:
        calls = []
        for number, call in enumerate(tool_calls):
            at = f"{where}.tool_calls[{number}].function"
            function = as_object(as_object(call).get("function"))
            name = function.get("name")
            if not isinstance(name, str):
                raise Untranslatable(f"{at}.name", "is missing")
            # An object, as Ollama's Go type (a map) reads it: null is none.
            arguments = function.get("arguments")
            if arguments is not None and not isinstance(arguments, dict):
                raise Untranslatable(f"{at}.arguments", "must be an object")
            calls.append(
                {
                    "id": ids.new(name),
                    "type": "function",
                    "function": {"name": name, "arguments": compact(arguments or {})},
                }
            )
        out["tool_calls"] = calls
    if role == "tool":
        out["tool_call_id"] = ids.answer(as_text(message.get("tool_name") or message.get("name")))
    return out


def _unloads(document: JSONObject) -> bool:
    """Whether keep_alive is zero (Ollama's Duration: seconds, or Go's duration text)."""
    keep = document.get("keep_alive")
    if isinstance(keep, str):
        return _ZERO_DURATION.fullmatch(keep) is not None
    return type(keep) in (int, float) and keep == 0


def _loaded(document: JSONObject, out: JSONObject, dropped: Dropped) -> Translated:
    """What Ollama does with nothing to answer: loads the model (or, keep_alive 0,
    unloads it) and answers at once; the backend's server keeps its own models."""
    reason = "unload" if _unloads(document) else "load"
    return Translated("", out, False, tuple(dropped.names), answered=reason)


def chat(document: JSONObject) -> Translated:
    """An Ollama /api/chat request as a chat completion."""
    dropped = Dropped()
    out = _common(document, dropped)
    messages = document.get("messages")
    messages = [] if messages is None else messages  # (null is none, as in Ollama)
    if not isinstance(messages, list):
        raise Untranslatable("messages", "must be a list")
    if not messages:
        return _loaded(document, out, dropped)
    ids = _CallIds()
    out["messages"] = [
        _message(message, index, ids, dropped) for index, message in enumerate(messages)
    ]
    tools = _tools(document.get("tools"))
    if tools:
        out["tools"] = tools
    return Translated(CHAT, out, out["stream"], tuple(dropped.names))


def generate(document: JSONObject) -> Translated:
    """An Ollama /api/generate request as a chat completion (the model's template applies,
    as in Ollama), or as a text completion when `raw` is true."""
    dropped = Dropped()
    out = _common(document, dropped)
    prompt = text(document, "prompt") or ""
    system = text(document, "system")
    suffix = text(document, "suffix")
    images = texts(document, "images")
    if not prompt and _unloads(document):
        return _loaded(document, out, dropped)
    raw = flag(document, "raw")
    if raw and (system or text(document, "template") or _context(document)):
        raise Untranslatable("raw", "raw mode does not support template, system, or context")
    if not prompt:
        return _loaded(document, out, dropped)
    if raw:
        if images:
            raise Untranslatable("images", "a raw prompt cannot carry images")
        if suffix:
            dropped.add("suffix")
        out["prompt"] = prompt
        return Translated(COMPLETIONS, out, out["stream"], tuple(dropped.names))
    if suffix:
        raise Untranslatable("suffix", "fill-in-the-middle needs raw (a text completion)")
    messages: list[JSONObject] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": _content(prompt, images)})
    out["messages"] = messages
    return Translated(CHAT, out, out["stream"], tuple(dropped.names))


def _context(document: JSONObject) -> bool:
    """Whether a generate request carries the context of an earlier answer (its tokens)."""
    context = document.get("context")
    if context is not None and not isinstance(context, list):
        raise Untranslatable("context", "must be a list of integers")
    return bool(context)


def _embedding_request(document: JSONObject, value: object, dropped: Dropped) -> JSONObject:
    out: JSONObject = {"model": document.get("model"), "input": value}
    dimensions = whole(document, "dimensions")
    if dimensions is not None and dimensions > 0:  # (Ollama: 0 or below is all of them)
        out["dimensions"] = dimensions
    typed_options(document.get("options"))  # (typed as Ollama types them, then dropped)
    for name in ("options", "keep_alive", "truncate"):
        if name in document:
            dropped.add(name)
    return out


def embed(document: JSONObject) -> Translated:
    """An Ollama /api/embed request (one text or several) as an embeddings request."""
    value = document.get("input")
    if not isinstance(value, str | list):
        raise Untranslatable("input", "must be a string or a list of strings")
    if isinstance(value, list):
        value = texts(document, "input")
    dropped = Dropped()
    out = _embedding_request(document, value, dropped)
    return Translated(EMBEDDINGS, out, False, tuple(dropped.names))


def embeddings(document: JSONObject) -> Translated:
    """Ollama's older /api/embeddings (one `prompt`) as an embeddings request."""
    prompt = text(document, "prompt")
    if prompt is None:
        raise Untranslatable("prompt", "must be a string")
    dropped = Dropped()
    out = _embedding_request(document, prompt, dropped)
    return Translated(EMBEDDINGS, out, False, tuple(dropped.names))
