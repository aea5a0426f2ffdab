"""Which translation serves which API, as one table the proxy reads.

Each entry turns the client's request into the backend's (`request`), the
backend's whole answer into the client's (`answer`), its stream into the
client's (`stream`), and any error into the client's API's shape (`error`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.translate import anthropic_request, anthropic_response, ollama_request
from gateway.translate import ollama_response as ollama
from gateway.translate.common import JSONObject, Translated, as_list, as_text, json_bytes
from gateway.translate.ollama_response import Timings


@dataclass(frozen=True)
class Exchange:
    """What an answer's translation needs to know of its request."""

    model: str  # as the client named it
    started: float  # perf_counter at the request's start
    epoch: float  # wall clock then
    stops: tuple[str, ...] = ()
    message_id: str = field(default_factory=lambda: f"msg_{secrets.token_hex(12)}")


class StreamTranslator(Protocol):
    """`now`: the time (perf_counter) of the run; None: the translator reads its clock
    where it needs the time (the relay's way: a token's run does not). `done`: its
    final record (or error) was written, and nothing the backend sends after it is read."""

    done: bool
    failure: str | None  # why it ended with the API's error record, if it did

    def feed(self, events: bytes, now: float | None = None) -> bytes: ...

    def close(self, failure: str | None, now: float | None = None) -> bytes: ...


@dataclass(frozen=True)
class Translation:
    request: Callable[[JSONObject], Translated]
    answer: Callable[[JSONObject, Exchange, float], JSONObject]  # (document, exchange, now)
    stream: Callable[[Exchange, bool], StreamTranslator] | None  # (exchange, via chat?)
    error: Callable[[int, str], JSONObject]  # (status, message): the API's error body
    stream_type: bytes = b"application/x-ndjson"
    # A request the gateway answers itself (Translated.answered): (reason, exchange).
    here: Callable[[str, Exchange], JSONObject] | None = None
    # A whole answer (translated) as the stream the client asked for, when the backend
    # answered its stream's request whole.
    whole_as_stream: Callable[[JSONObject], bytes] | None = None


def ollama_error(status: int, message: str) -> JSONObject:
    return {"error": message}


def anthropic_error(status: int, message: str) -> JSONObject:
    return anthropic_response.error_document(status, message)


def _ollama(
    answer: Callable[[JSONObject, str, Timings, float], JSONObject],
) -> Callable[[JSONObject, Exchange, float], JSONObject]:
    def translate(document: JSONObject, exchange: Exchange, now: float) -> JSONObject:
        return answer(
            document, exchange.model, _whole_timings(document, exchange, now), exchange.epoch
        )

    return translate


def _whole_timings(document: JSONObject, exchange: Exchange, now: float) -> Timings:
    """A whole answer does not say when its first token came: the time is shared between
    the prompt and the generation in proportion to their tokens."""
    usage = document.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt, made = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if type(prompt) is int and type(made) is int and prompt + made > 0 and made >= 0:
        share = prompt / (prompt + made)
        return Timings(exchange.started, exchange.started + (now - exchange.started) * share, now)
    return Timings(exchange.started, None, now)


def _ollama_stream(chat: bool) -> Callable[[Exchange, bool], StreamTranslator]:
    def start(exchange: Exchange, via_chat: bool) -> StreamTranslator:
        return ollama.OllamaStream(
            exchange.model, chat=chat, started=exchange.started, epoch=exchange.epoch
        )

    return start


def _message_answer(document: JSONObject, exchange: Exchange, now: float) -> JSONObject:
    return anthropic_response.message_answer(
        document, exchange.model, exchange.message_id, exchange.stops
    )


def _message_stream(exchange: Exchange, via_chat: bool) -> StreamTranslator:
    return anthropic_response.AnthropicStream(exchange.model, exchange.message_id, exchange.stops)


def _count_answer(document: JSONObject, exchange: Exchange, now: float) -> JSONObject:
    return anthropic_response.count_answer(document)


def _ollama_line(answer: JSONObject) -> bytes:
    """A whole answer is Ollama's final record: its stream is that one line."""
    return json_bytes(answer) + b"\n"


def _ollama_loaded(chat: bool) -> Callable[[str, Exchange], JSONObject]:
    def answer(reason: str, exchange: Exchange) -> JSONObject:
        return ollama.loaded_answer(exchange.model, reason, chat=chat, epoch=exchange.epoch)

    return answer


TRANSLATIONS = {
    "/api/chat": Translation(
        ollama_request.chat,
        _ollama(ollama.chat_answer),
        _ollama_stream(True),
        ollama_error,
        here=_ollama_loaded(True),
        whole_as_stream=_ollama_line,
    ),
    "/api/generate": Translation(
        ollama_request.generate,
        _ollama(ollama.generate_answer),
        _ollama_stream(False),
        ollama_error,
        here=_ollama_loaded(False),
        whole_as_stream=_ollama_line,
    ),
    "/api/embed": Translation(
        ollama_request.embed, _ollama(ollama.embed_answer), None, ollama_error
    ),
    "/api/embeddings": Translation(
        ollama_request.embeddings, _ollama(ollama.embeddings_answer), None, ollama_error
    ),
    "/v1/messages": Translation(
        anthropic_request.messages,
        _message_answer,
        _message_stream,
        anthropic_error,
        b"text/event-stream; charset=utf-8",
        whole_as_stream=anthropic_response.message_events,
    ),
    "/v1/messages/count_tokens": Translation(
        anthropic_request.count_tokens, _count_answer, None, anthropic_error
    ),
}

ErrorShape = Callable[[int, str], JSONObject]
# The error shape of each API that has its own (the gateway's own errors included).
ERROR_SHAPES: dict[str, ErrorShape] = {
    "/api/chat": ollama_error,
    "/api/generate": ollama_error,
    "/api/embed": ollama_error,
    "/api/embeddings": ollama_error,
    "/api/show": ollama_error,
    "/v1/messages": anthropic_error,
    "/v1/messages/count_tokens": anthropic_error,
}


def error_shape_for(path: str) -> ErrorShape | None:
    """The error shape of the API a path belongs to, for a route the gateway does not
    have too (POST /api/pull, GET /v1/messages, /v1/messages/batches): Ollama's under
    /api/, Anthropic's under /v1/messages; None for OpenAI's, the default."""
    if path in ERROR_SHAPES:
        return ERROR_SHAPES[path]
    if path.startswith("/api/"):
        return ollama_error
    return anthropic_error if path.startswith("/v1/messages/") else None


def stops_of(document: JSONObject) -> tuple[str, ...]:
    """The stop sequences a Messages request names (to tell which one was met)."""
    return tuple(as_text(stop) for stop in as_list(document.get("stop_sequences")))
