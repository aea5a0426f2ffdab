"""The typical chat that translation's cost is measured on (#24: under 100 µs added).

A short system prompt and one user message, in each API's words, and a
50-token answer as an OpenAI backend (vLLM) sends it: whole, or as a stream
of one event per token (a role event first, a finish event, the usage event
when asked, `[DONE]`), in vLLM's compact JSON.
"""

from __future__ import annotations

import json
from typing import Any

MODEL = "bench"
SYSTEM = "You are a helpful assistant. Answer in a few sentences."
USER = "What river runs through Paris? Tell me about its history."
MAX_TOKENS = 128
TOKENS = 50
ANSWER = (
    "The Seine runs through Paris; its banks, from the Louvre to the Eiffel Tower, "
    "are a UNESCO World Heritage Site. The river shaped the city: the first "
    "settlement, of the Parisii, stood on the Île de la Cité, and boats carried "
    "grain, wine and stone to its quays for centuries before the railways came."
)
# 50 tokens of one word each (a word's leading space is part of its token).
WORDS = [f" {word}" for word in ANSWER.split()][:TOKENS]
USAGE = {"prompt_tokens": 31, "completion_tokens": TOKENS, "total_tokens": 31 + TOKENS}
CREATED = 1733300000


def openai_request(stream: bool) -> bytes:
    """The chat as a client of /v1/chat/completions sends it."""
    return _dumps(
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": USER},
            ],
            "max_tokens": MAX_TOKENS,
            "temperature": 0.7,
            "stream": stream,
        }
    )


def ollama_request(stream: bool) -> bytes:
    """The chat as Ollama's client sends it to /api/chat."""
    return _dumps(
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": USER},
            ],
            "stream": stream,
            "options": {"temperature": 0.7, "num_predict": MAX_TOKENS},
        }
    )


def anthropic_request(stream: bool) -> bytes:
    """The chat as Anthropic's SDK sends it to /v1/messages."""
    return _dumps(
        {
            "model": MODEL,
            "max_tokens": MAX_TOKENS,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": USER}],
            "temperature": 0.7,
            "stream": stream,
        }
    )


def whole_answer() -> bytes:
    """The backend's chat completion."""
    return _compact(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(WORDS).strip()},
                    "logprobs": None,
                    "finish_reason": "stop",
                    "stop_reason": None,
                }
            ],
            "usage": USAGE,
        }
    )


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    if finish is not None:
        choice["stop_reason"] = None
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [choice],
    }
    return b"data: " + _compact(chunk) + b"\n\n"


def stream_events(with_usage: bool) -> list[bytes]:
    """The backend's stream, one event per token (each its own write)."""
    events = [
        _chunk({"role": "assistant", "content": ""}),
        *(_chunk({"content": word}) for word in WORDS),
        _chunk({}, "stop"),
    ]
    if with_usage:
        usage_chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [],
            "usage": USAGE,
        }
        events.append(b"data: " + _compact(usage_chunk) + b"\n\n")
    return [*events, b"data: [DONE]\n\n"]


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def _compact(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
