"""A request's affinity key: what says "this continues that conversation". Pure.

The key is taken, first found first, from:
1. the `X-Session-ID` header (any client can set it; the `openai` SDK with
   `extra_headers`);
2. the body's `user` (OpenAI's end-user id);
3. the conversation's beginning: the leading messages up to and including the
   first user message (`messages`: chat, Anthropic's Messages with its `system`,
   Ollama's `/api/chat`; the Responses API's `instructions` and `input`), or the
   first PROMPT_CHARS characters of `prompt` (completions, Ollama's generate).
Every turn of a chat repeats its beginning, so every turn has the same key,
and the server that holds the conversation's prefix in its cache gets it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gateway.routing.reported.scorer import Hint

PROMPT_CHARS = 2048
CONTENT_CHARS = 4096  # of each leading message
LEADING_MESSAGES = 4  # at most, when the first user message comes late
MAX_SESSION_CHARS = 256


def _digest(kind: bytes, text: str) -> bytes:
    return hashlib.blake2b(kind + text.encode("utf-8", "replace"), digest_size=16).digest()


def _text(content: Any) -> str | None:
    """A message's content as text: a string as it is, anything else (a list of parts)
    as its JSON (keys sorted: the same parts in another key order are the same text)."""
    if isinstance(content, str):
        return content[:CONTENT_CHARS]
    try:
        return json.dumps(content, sort_keys=True)[:CONTENT_CHARS]
    except (TypeError, ValueError, RecursionError):
        return None


def _leading(messages: list[Any], parts: list[str]) -> None:
    """Add "role NUL content" of the messages up to and including the first user message."""
    for message in messages[:LEADING_MESSAGES]:
        if not isinstance(message, dict):
            return
        content = _text(message.get("content"))
        if content is None:
            return
        role = message.get("role")
        if not isinstance(role, str):
            role = ""
        parts.append(f"{role}\0{content}")
        if role == "user":
            return


def affinity_key(document: Mapping[str, Any], session: str | None = None) -> bytes | None:
    """The key of a parsed JSON body (and its session header), or None: no affinity.
    (It runs on every request with a choice of backends: no intermediate lists.)"""
    if session:
        return _digest(b"session\0", session[:MAX_SESSION_CHARS])
    get = document.get
    user = get("user")
    if isinstance(user, str) and user:
        return _digest(b"user\0", user[:MAX_SESSION_CHARS])
    parts: list[str] = []
    for name in ("system", "instructions"):
        value = get(name)
        if value is not None:
            text = _text(value)
            if text is not None:
                parts.append(text)
    messages = get("messages")
    if isinstance(messages, list):
        _leading(messages, parts)
    value = get("input")
    if isinstance(value, list):
        _leading(value, parts)
    elif isinstance(value, str):
        parts.append(value[:PROMPT_CHARS])
    prompt = get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt[:PROMPT_CHARS])
    if not parts:
        return None
    return _digest(b"lead\0", "\0\1".join(parts))


def hint_for(document: Mapping[str, Any] | None, session: str | None, body_bytes: int) -> Hint:
    """What `auto` reads of a request: its affinity key, and its prompt's size in tokens
    guessed from the body's bytes (about four a token)."""
    return Hint(affinity_key(document or {}, session), body_bytes // 4)
