"""Another API over a backend that lacks it: translation as a layer around forwarding.

An Ollama or Anthropic request goes first as it is, to a backend that speaks
that API (a native Ollama is preferred for Ollama's API). When every healthy
backend of the model is known to lack the path (gateway/routing/learned.py),
or the one tried just said so, the request is translated
(gateway/translate/) and forwarded to the OpenAI path instead, with the same
routing, failover and accounting; its answer, whole or streamed, is translated
back. What the translation left out is named in `x-gateway-dropped`.
The proxy's other APIs never come here (their path is unchanged).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time

from gateway.errors import JSONAnswer
from gateway.json_bodies import parse_json_object
from gateway.proxy.backend_errors import BODY_HEADERS
from gateway.proxy.bodies import EMPTY_HINT, Target
from gateway.proxy.client_watch import ClientWatch
from gateway.proxy.forward import Answer, Forwarder, Incoming
from gateway.proxy.relay import BufferedResponse, RelayedStream
from gateway.proxy.runtime import ProxyRuntime
from gateway.translate.common import (
    JSONObject,
    UntranslatableAnswer,
    client_fault,
    json_bytes,
    openai_error_message,
    request_bytes,
)
from gateway.translate.ollama_response import show_answer
from gateway.translate.table import (
    ERROR_SHAPES,
    TRANSLATIONS,
    Exchange,
    Translation,
    stops_of,
)
from shared.errors import GatewayError, NotFound
from shared.upstream import UpstreamError

SHOW_PATH = "/api/show"
MAX_DROPPED_NAMES = 20
_TOKEN = re.compile(r"[A-Za-z0-9_.\[\]-]{1,64}")
LACKING_STATUSES = (404, 405, 501)


def dropped_header(names: tuple[str, ...]) -> bytes:
    """The names of what was dropped, as a header's value: a name the client wrote (an
    option's) that is no plain token is quoted as JSON (ASCII, no line breaks); at most
    MAX_DROPPED_NAMES are named."""
    shown = [
        name if _TOKEN.fullmatch(name) else json.dumps(name) for name in names[:MAX_DROPPED_NAMES]
    ]
    if len(names) > MAX_DROPPED_NAMES:
        shown.append(f"and {len(names) - MAX_DROPPED_NAMES} more")
    return ", ".join(shown).encode()


def translates(path: str) -> bool:
    return path in TRANSLATIONS or path == SHOW_PATH


def every_backend_lacks(runtime: ProxyRuntime, model: str, path: str) -> bool:
    """Whether each healthy backend of `model` is known to lack `path` now."""
    lacking = runtime.learned.lacking(model, path)
    if not lacking:
        return False
    healthy = [b for b in runtime.holder.current.backends(model) if b.healthy and not b.draining]
    return bool(healthy) and all(b.registration_id in lacking for b in healthy)


def lacked(answer: Answer, runtime: ProxyRuntime, model: str, path: str) -> bool:
    """Whether the answer is the 404/405/501 of a backend that lacks `path`."""
    if not isinstance(answer, BufferedResponse) or answer.status not in LACKING_STATUSES:
        return False
    server = dict(answer.headers).get(b"x-gateway-server-id", b"").decode()
    return server in runtime.learned.lacking(model, path)


async def forward(
    runtime: ProxyRuntime, incoming: Incoming, target: Target, watch: ClientWatch
) -> Answer | JSONAnswer:
    """The request in its own API if a backend has it, else translated."""
    path = incoming.path
    if not every_backend_lacks(runtime, target.model, path):
        answer = await Forwarder(runtime, incoming, watch).run(target)
        if not lacked(answer, runtime, target.model, path):
            return answer
    if path == SHOW_PATH:
        return show(runtime, target.model)
    return await translated(runtime, incoming, target, watch, TRANSLATIONS[path])


def show(runtime: ProxyRuntime, model: str) -> JSONAnswer:
    """/api/show from what the pool knows of the model (no backend is asked)."""
    snapshot = runtime.holder.current
    if not snapshot.backends(model):
        raise NotFound(f"model {model!r} not found")
    details = snapshot.details.get(model, {})
    return JSONAnswer(200, show_answer(model, details, snapshot.created.get(model, 0)), [])


async def translated(
    runtime: ProxyRuntime,
    incoming: Incoming,
    target: Target,
    watch: ClientWatch,
    translation: Translation,
) -> Answer:
    document = _document(incoming, target)
    request = translation.request(document)  # an Untranslatable is the client's 400
    dropped = [(b"x-gateway-dropped", dropped_header(request.dropped))] if request.dropped else []
    if request.answered is not None and translation.here is not None:
        exchange = Exchange(target.model, time.perf_counter(), time.time())
        here = translation.here(request.answered, exchange)
        headers = [(b"content-type", b"application/json"), *dropped]
        return BufferedResponse(200, headers, json_bytes(here))
    body = request_bytes(request.document)  # (nested too deep to write: the client's 400)
    outgoing = dataclasses.replace(
        incoming,
        path=request.path,
        body=body,
        content_type="application/json",
        model_span=None,
        endpoint=incoming.path,
        whole=not request.stream,
    )
    forwarder = Forwarder(runtime, outgoing, watch)
    exchange = Exchange(target.model, forwarder.started_precise, time.time(), stops_of(document))
    answer = await forwarder.run(Target(target.model, request.stream))
    if isinstance(answer, RelayedStream):  # (asked for: a request for none reads whole)
        return _translated_stream(answer, translation, exchange, dropped)
    # A whole answer to a stream's request, as some servers give, is the stream of it.
    return _translated_whole(answer, translation, exchange, dropped, request.stream)


def _document(incoming: Incoming, target: Target) -> JSONObject:
    """The client's body, as the endpoint parsed it to route it (translations only read
    it), or parsed here when the endpoint kept only what routing reads (a large body)."""
    if target.whole_body and isinstance(target.members, dict):
        return target.members
    return parse_json_object(incoming.body, empty_hint=EMPTY_HINT, strict=True)


def _translated_whole(
    answer: BufferedResponse,
    translation: Translation,
    exchange: Exchange,
    extra: list[tuple[bytes, bytes]],
    stream: bool = False,
) -> BufferedResponse:
    document: JSONObject | None = None
    if answer.status == 200:
        try:
            parsed = json.loads(answer.body)
        except (ValueError, RecursionError):
            parsed = None
        document = parsed if isinstance(parsed, dict) else None
    status = answer.status if answer.status >= 400 else 502
    if document is not None and isinstance(document.get("error"), dict):
        # A 200 whose body is an error, as some servers answer: the error it is (the
        # client's 4xx when its code says so; else the Forwarder failed it over).
        status = client_fault(document["error"]) or 502
        out = translation.error(status, openai_error_message(status, answer.body))
    elif document is not None:
        try:
            status, out = 200, translation.answer(document, exchange, time.perf_counter())
        except UntranslatableAnswer as untranslatable:
            out = translation.error(502, str(untranslatable))
    else:
        message = openai_error_message(answer.status, answer.body)
        if answer.status < 400:
            message = "the backend's answer could not be translated: it is not a JSON object"
        out = translation.error(status, message)
    kept = [
        (name, value)
        for name, value in answer.headers
        if name not in BODY_HEADERS and name != b"content-length"
    ]
    if stream and status == 200 and translation.whole_as_stream is not None:
        headers = [(b"content-type", translation.stream_type), *kept, *extra]
        return BufferedResponse(status, headers, translation.whole_as_stream(out))
    headers = [(b"content-type", b"application/json"), *kept, *extra]
    return BufferedResponse(status, headers, json_bytes(out))


def _translated_stream(
    answer: RelayedStream,
    translation: Translation,
    exchange: Exchange,
    extra: list[tuple[bytes, bytes]],
) -> RelayedStream:
    assert translation.stream is not None  # (a request that has no stream reads whole)
    translator = translation.stream(exchange, True)

    def closing(failure: UpstreamError | None) -> bytes:
        reason = None if failure is None else f"the backend failed mid-stream: {failure.reason}"
        return translator.close(reason)

    # The backend's usage is read from what it sent (the relay's tail), as for any stream.
    # Each run goes to the translator as it is: its time is read only where it is needed.
    answer.rewrite = translator.feed
    answer.closing = closing
    answer.ends = translator
    kept = [(name, value) for name, value in answer.headers if name not in BODY_HEADERS]
    answer.headers = [(b"content-type", translation.stream_type), *kept, *extra]
    return answer


def shaped_error(path: str, error: GatewayError) -> JSONObject | None:
    """One of the gateway's own errors in the shape of the API it came through."""
    return shaped_body(path, error.status_code, error.message)


def shaped_body(path: str, status: int, message: str) -> JSONObject | None:
    """An error's body in the shape of the API of `path`; None: OpenAI's."""
    shape = ERROR_SHAPES.get(path)
    return None if shape is None else shape(status, message)
