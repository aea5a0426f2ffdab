"""The demo backend's other APIs: Anthropic's Messages, Ollama's and OpenAI's Responses.

Messages and Ollama's API are answered by the demo's own chat, completions and
embeddings through the gateway's translations (gateway/translate/), the way a
server that has them natively would answer; the Responses API is written out
here. So `make run` shows every API the gateway routes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.translate.common import Untranslatable, openai_error_message
from gateway.translate.ollama_response import show_answer
from gateway.translate.table import TRANSLATIONS, Exchange, Translation, stops_of
from shared.errors import error_body

Reader = Callable[[Request], Awaitable[dict[str, Any] | Response]]
Answers = dict[str, Callable[[dict[str, Any]], Response]]


def _translating(
    translation: Translation, read: Reader, answers: Answers
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        document = await read(request)
        if isinstance(document, Response):
            return document
        try:
            translated = translation.request(document)
        except Untranslatable as refused:
            return JSONResponse(translation.error(400, refused.message), status_code=400)
        exchange = Exchange(document["model"], time.perf_counter(), time.time(), stops_of(document))
        answer = answers[translated.path](translated.document)
        if isinstance(answer, StreamingResponse) and translation.stream is not None:
            translator = translation.stream(exchange, True)
            events = answer.body_iterator

            async def translated_events() -> AsyncIterator[bytes]:
                async for chunk in events:
                    data = chunk if isinstance(chunk, bytes) else str(chunk).encode()
                    yield translator.feed(data, time.perf_counter())
                yield translator.close(None, time.perf_counter())

            media = translation.stream_type.decode()
            return StreamingResponse(translated_events(), media_type=media)
        if answer.status_code != 200:
            message = openai_error_message(answer.status_code, bytes(answer.body))
            return JSONResponse(translation.error(answer.status_code, message), answer.status_code)
        whole = translation.answer(json.loads(bytes(answer.body)), exchange, time.perf_counter())
        return JSONResponse(whole)

    return endpoint


def count_refused(value: object, name: str) -> str | None:
    """Why `value` is not a count of tokens (None when it is one): a positive integer, or
    a float that is one (16.0), as vLLM's pydantic takes it. The value is quoted short."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int and value >= 1:
        return None
    quoted = json.dumps(value)
    quoted = quoted if len(quoted) <= 40 else f"{quoted[:37]}..."
    return f"{name} must be a positive integer, not {quoted}"


def _input_text(value: object) -> str:
    """The last user words of a Responses request's `input` (text or items)."""
    if isinstance(value, str):
        return value
    for item in reversed(value if isinstance(value, list) else []):
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            return content
        for part in reversed(content if isinstance(content, list) else []):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                return str(part["text"])
    return ""


def _response(model: str, ident: str, text: str, usage: dict[str, int], status: str) -> Any:
    item = {
        "type": "message",
        "id": f"msg_{ident}",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        "id": f"resp_{ident}",
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "status": status,
        "output": [item] if status == "completed" else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage if status == "completed" else None,
    }


KEPT_RESPONSES = 1000  # the demo keeps the last ones for GET and DELETE, as a server would


class StoredResponses:
    """The demo's last responses, so that retrieving or deleting one works through the
    gateway as on a real server (oldest forgotten first). (`previous_response_id` is
    not read: the demo's answer does not depend on the conversation.)"""

    def __init__(self) -> None:
        self.kept: OrderedDict[str, Any] = OrderedDict()

    def keep(self, response: Any) -> None:
        self.kept[response["id"]] = response
        while len(self.kept) > KEPT_RESPONSES:
            self.kept.popitem(last=False)

    def routes(self) -> list[Route]:
        async def retrieve(request: Request) -> Response:
            found = self.kept.get(request.path_params["response_id"])
            return _not_found(request) if found is None else JSONResponse(found)

        async def delete(request: Request) -> Response:
            ident = request.path_params["response_id"]
            if self.kept.pop(ident, None) is None:
                return _not_found(request)
            return JSONResponse({"id": ident, "object": "response.deleted", "deleted": True})

        path = "/v1/responses/{response_id}"
        return [Route(path, retrieve, methods=["GET"]), Route(path, delete, methods=["DELETE"])]


def _not_found(request: Request) -> Response:
    ident = request.path_params["response_id"]
    error = {
        "message": f"Response with id '{ident}' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    return JSONResponse({"error": error}, status_code=404)


def _responses(
    model: str, read: Reader, answers: Answers, stored: StoredResponses
) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        document = await read(request)
        if isinstance(document, Response):
            return document
        limit = document.get("max_output_tokens")
        limit = 16 if limit is None else limit
        if (refused := count_refused(limit, "max_output_tokens")) is not None:
            return JSONResponse(error_body(400, refused), status_code=400)
        chat = {
            "model": model,
            "messages": [{"role": "user", "content": _input_text(document.get("input"))}],
            "max_tokens": limit,
        }
        answer = json.loads(bytes(answers["/v1/chat/completions"](chat).body))
        text = answer["choices"][0]["message"]["content"]
        usage = answer["usage"]
        counts = {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        }
        ident = uuid.uuid4().hex[:24]
        done = _response(model, ident, text, counts, "completed")
        if document.get("store", True) is not False:
            stored.keep(done)
        if not document.get("stream"):
            return JSONResponse(done)
        return StreamingResponse(
            _response_events(model, ident, done), media_type="text/event-stream"
        )

    return endpoint


async def _response_events(model: str, ident: str, done: Any) -> AsyncIterator[bytes]:
    """The Responses API's stream: created, the message's item and part, its text in
    deltas, then done events and `response.completed`."""
    item = done["output"][0]
    text = item["content"][0]["text"]
    empty_item = {**item, "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    base = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": _response(model, ident, "", {}, "in_progress")}),
        ("response.output_item.added", {"output_index": 0, "item": empty_item}),
        ("response.content_part.added", {**base, "part": part}),
    ]
    for index, word in enumerate(text.split(" ")):
        events.append(
            ("response.output_text.delta", {**base, "delta": (" " if index else "") + word})
        )
    events += [
        ("response.output_text.done", {**base, "text": text}),
        ("response.content_part.done", {**base, "part": item["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": done}),
    ]
    for number, (kind, data) in enumerate(events):
        payload = json.dumps({"type": kind, "sequence_number": number, **data})
        yield f"event: {kind}\ndata: {payload}\n\n".encode()


def native_routes(model: str, read: Reader, answers: Answers) -> list[Route]:
    """The routes of the APIs the demo speaks besides OpenAI's chat, completions and
    embeddings."""

    async def show(request: Request) -> Response:
        document = await read(request)
        if isinstance(document, Response):
            return document
        return JSONResponse(show_answer(model, {"max_model_len": 4096}, time.time()))

    routes = [
        Route(path, _translating(translation, read, answers), methods=["POST"])
        for path, translation in TRANSLATIONS.items()
    ]
    routes.append(Route("/api/show", show, methods=["POST"]))
    stored = StoredResponses()
    routes.append(
        Route("/v1/responses", _responses(model, read, answers, stored), methods=["POST"])
    )
    return [*routes, *stored.routes()]
