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
from gateway.translate.table import TRANSLATIONS, Exchange, Translation, ollama_error, stops_of
from shared.errors import error_body

Reader = Callable[[Request], Awaitable[dict[str, Any] | Response]]
Answers = dict[str, Callable[[dict[str, Any]], Response]]
Check = Callable[[dict[str, Any]], str | None]
CONTEXT_LENGTH = 4096  # the demo model's, as /v1/models and /tokenize say it (as vLLM does)
MAX_BODY_DEPTH = 200  # a body nested deeper is refused (see parse_body)


def whole_text(text: str) -> str:
    """`text` with each lone surrogate (JSON's escapes let "\\ud800" in) as U+FFFD, so
    that it can be written as UTF-8."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def json_text(document: object) -> str:
    """`document` as the demo writes all its JSON: compact, and always UTF-8 a strict
    client reads (a lone surrogate anywhere in an answer, a tool's name or a required
    argument's echoed, was a UnicodeEncodeError: a 500)."""
    return whole_text(
        json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    )


class DemoJSON(JSONResponse):
    """Starlette's JSONResponse, written by json_text."""

    def render(self, content: Any) -> bytes:
        return json_text(content).encode()


def quoted(value: object) -> str:
    """`value` as JSON in ASCII, cut short: a refusal names what it refuses without
    sending a 10 MB string back."""
    text = json.dumps(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _not_json(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


def parse_body(raw: bytes) -> dict[str, Any] | str:
    """The request's JSON object, or why it is the client's 400. The parser gives up
    at the recursion limit with a RecursionError (was a 500); and a document parsed
    just under it could not be written, quoted or compared deeper down the stack:
    past MAX_BODY_DEPTH levels, no request of any API the demo speaks is meant."""
    try:
        document = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        return "body is nested too deeply"
    except ValueError:
        return "body is not JSON"
    if not isinstance(document, dict):
        return "body must be an object"
    if _nested_past(raw, document, MAX_BODY_DEPTH):
        return f"body is nested too deeply (more than {MAX_BODY_DEPTH} levels)"
    return document


def _nested_past(raw: bytes, document: dict[str, Any], bound: int) -> bool:
    """Whether `document` (parsed from `raw`) nests more than `bound` levels; told
    without a walk when its text has fewer brackets, and walked without recursion."""
    if raw.count(b"{") + raw.count(b"[") <= bound:
        return False
    level: list[tuple[dict[str, Any] | list[Any], int]] = [(document, 1)]
    while level:
        item, depth = level.pop()
        for member in item.values() if isinstance(item, dict) else item:
            if isinstance(member, dict | list):
                if depth >= bound:
                    return True
                level.append((member, depth + 1))
    return False


def messages_refused(document: dict[str, Any]) -> str | None:
    """What Anthropic's Messages API requires that a chat does not (None when it is
    there), in its words: max_tokens (a chat's defaults to 16) and a message."""
    if document.get("max_tokens") is None:
        return "max_tokens: Field required"
    if (refused := count_refused(document["max_tokens"], "max_tokens")) is not None:
        return refused
    if "messages" not in document:
        return "messages: Field required"
    if document["messages"] == []:
        return "messages: at least one message is required"
    return None


def _shaped(read: Reader, error: Callable[[int, str], dict[str, Any]]) -> Reader:
    """`read`, its refusals (not JSON, another model, a bad key) in the route's API's
    error shape: an Ollama or Anthropic client does not read OpenAI's."""

    async def shaped(request: Request) -> dict[str, Any] | Response:
        document = await read(request)
        if isinstance(document, Response) and document.status_code >= 400:
            status = document.status_code
            message = openai_error_message(status, bytes(document.body))
            return DemoJSON(error(status, message), status_code=status)
        return document

    return shaped


def _translating(
    translation: Translation, read: Reader, answers: Answers, check: Check | None
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        document = await _shaped(read, translation.error)(request)
        if isinstance(document, Response):
            return document
        if check is not None and (refused := check(document)) is not None:
            return DemoJSON(translation.error(400, refused), status_code=400)
        try:
            translated = translation.request(document)
        except Untranslatable as refused:
            return DemoJSON(translation.error(400, refused.message), status_code=400)
        exchange = Exchange(document["model"], time.perf_counter(), time.time(), stops_of(document))
        if translated.answered is not None and translation.here is not None:
            return DemoJSON(translation.here(translated.answered, exchange))  # (load, unload)
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
            return DemoJSON(translation.error(answer.status_code, message), answer.status_code)
        whole = translation.answer(json.loads(bytes(answer.body)), exchange, time.perf_counter())
        return DemoJSON(whole)

    return endpoint


def count_refused(value: object, name: str) -> str | None:
    """Why `value` is not a count of tokens (None when it is one): a positive integer, or
    a float that is one (16.0), as vLLM's pydantic takes it. The value is quoted short."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int and value >= 1:
        return None
    return f"{name} must be a positive integer, not {quoted(value)}"


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
            return _not_found(request) if found is None else DemoJSON(found)

        async def delete(request: Request) -> Response:
            ident = request.path_params["response_id"]
            if self.kept.pop(ident, None) is None:
                return _not_found(request)
            return DemoJSON({"id": ident, "object": "response.deleted", "deleted": True})

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
    return DemoJSON({"error": error}, status_code=404)


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
            return DemoJSON(error_body(400, refused), status_code=400)
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
            return DemoJSON(done)
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
        payload = json_text({"type": kind, "sequence_number": number, **data})
        yield f"event: {kind}\ndata: {payload}\n\n".encode()


def native_routes(model: str, read: Reader, answers: Answers) -> list[Route]:
    """The routes of the APIs the demo speaks besides OpenAI's chat, completions and
    embeddings."""

    async def show(request: Request) -> Response:
        document = await _shaped(read, ollama_error)(request)
        if isinstance(document, Response):
            return document
        return DemoJSON(show_answer(model, {"max_model_len": CONTEXT_LENGTH}, time.time()))

    checks = {"/v1/messages": messages_refused}
    routes = [
        Route(path, _translating(translation, read, answers, checks.get(path)), methods=["POST"])
        for path, translation in TRANSLATIONS.items()
    ]
    routes.append(Route("/api/show", show, methods=["POST"]))
    stored = StoredResponses()
    routes.append(
        Route("/v1/responses", _responses(model, read, answers, stored), methods=["POST"])
    )
    return [*routes, *stored.routes()]
