"""Canaries: healthd checks that a server really generates with each model it lists.

A model list says what a server claims, not what it can do: a broken model, a
server that answers every name with the one model it has, or a classmate's
proxy in front of something else all list fine. Every CANARY_EVERY_CHECKS-th
check (the first one included) sends each model the registration serves a
1-token chat completion at temperature 0; a model whose canary fails (an error,
no choices, an answer naming another model) is unhealthy for that model alone,
with the reason, until a canary passes.

Costs stay bounded: at most MAX_MODELS models per round, 1 token each, and
never a cold load: a server that loads models on demand (one that answers
Ollama's `GET /api/ps`) is sent canaries only for the models loaded now, or
served through the gateway in the last few minutes, so a canary never evicts
a model someone is using. A 4xx (a model that does not chat: embeddings, say)
judges nothing. Canaries are counted on the registration as health traffic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.model_names import plain_name, same_model
from shared.upstream import Transport, UpstreamError, UpstreamRequest

MAX_MODELS = 4
MAX_ANSWER_BYTES = 64 * 1024
RECENT_SECONDS = 300  # "served in the last few minutes"
PROMPT = "Reply with one word."


@dataclass(frozen=True)
class CanaryResult:
    model: str  # the name clients use
    ok: bool | None  # None: not judged (a 4xx: the model does not chat)
    reason: str | None = None


def judge(asked: str, status: int, body: bytes) -> tuple[bool | None, str | None]:
    """What one canary answer says of the model (pure)."""
    if 400 <= status < 500 and status != 429:
        return None, None
    if status != 200:
        return False, f"the canary generation answered HTTP {status}"
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False, "the canary generation's answer is not JSON"
    if not isinstance(document, dict):
        return False, "the canary generation's answer is not a JSON object"
    choices = document.get("choices")
    if not isinstance(choices, list) or not choices:
        return False, "the canary generation answered no choices (an empty answer)"
    answered = document.get("model")
    if not same_model(asked, answered):
        return False, f"asked for model {asked!r}, the answer names {answered!r}"
    return True, None


def to_check(
    served: Sequence[tuple[str, str]],
    loaded: set[str] | None,
    recent: Iterable[str],
    turn: int,
    limit: int = MAX_MODELS,
) -> list[tuple[str, str]]:
    """(client name, backend name) of the models this round checks (pure): every served
    one, or with `loaded` (an on-demand server) only those loaded or recently served;
    at most `limit`, taking turns from round to round."""
    if loaded is not None:
        warm = {plain_name(name) for name in loaded}
        recently = set(recent)
        served = [(n, b) for n, b in served if plain_name(b) in warm or n in recently]
    if len(served) <= limit:
        return list(served)
    start = (turn * limit) % len(served)
    return [served[(start + i) % len(served)] for i in range(limit)]


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "multiverse-gateway-canary"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


async def loaded_models(
    transport: Transport, base_url: str, api_key: str | None, timeout: float
) -> set[str] | None:
    """The models an Ollama-like server has loaded now (None: it is not one, so every
    model it lists is loaded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    request = UpstreamRequest(base_url, "/api/ps", _headers(api_key), method="GET")
    try:
        async with transport.stream(request, deadline) as response:
            if response.status != 200:
                return None
            body = await response.read_all(MAX_ANSWER_BYTES, deadline)
        models = json.loads(body).get("models")
    except (UpstreamError, ValueError, AttributeError, UnicodeDecodeError):
        return None
    if not isinstance(models, list):
        return None
    return {
        str(entry.get("name") or entry.get("model"))
        for entry in models
        if isinstance(entry, dict) and (entry.get("name") or entry.get("model"))
    }


async def canary(
    transport: Transport,
    base_url: str,
    api_key: str | None,
    model: str,
    backend_model: str,
    timeout: float,
) -> CanaryResult:
    """One 1-token generation at temperature 0; never raises for what the server does."""
    deadline = asyncio.get_running_loop().time() + timeout
    body = json.dumps(
        {
            "model": backend_model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 1,
            "temperature": 0,
            "stream": False,
        }
    ).encode()
    request = UpstreamRequest(
        base_url, "/v1/chat/completions", _headers(api_key), body, method="POST"
    )
    try:
        async with transport.stream(request, deadline) as response:
            status = response.status
            answer = await response.read_all(MAX_ANSWER_BYTES, deadline)
    except UpstreamError as error:
        return CanaryResult(model, False, f"the canary generation failed: {error.reason}")
    ok, reason = judge(backend_model, status, answer)
    return CanaryResult(model, ok, reason)
