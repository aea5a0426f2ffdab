"""Reading a backend's error answer: what it says of the backend, and what the client sees.

Pure functions of the status and the bytes. A status alone says too little:
vLLM and Ollama answer 404 for a route they lack *and* for a model or a
response id they do not know; a 400 on a stream may refuse the gateway's
`stream_options` or the client's prompt. The body tells them apart:

- a route a server lacks gets its framework's generic words (FastAPI's
  `{"detail": "Not Found"}`, Go's `404 page not found`, llama.cpp's
  `File Not Found`, an empty body), or names the path; a model or an id it
  does not know gets a sentence about that model or id;
- a refused option names it (`stream_options`, `include_usage`).

And what reaches the client is always an error in its API's shape, with no
secret in it: a body that is not (FastAPI's `detail`, plain text, HTML) is
wrapped, keeping the status and the backend's own words when it gave some.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.proxy.relay import BufferedResponse
from gateway.translate.common import client_fault
from gateway.translate.table import ErrorShape, anthropic_error, error_shape_for, ollama_error
from shared.errors import error_body
from shared.failures import FailureKind
from shared.upstream import UpstreamError

# What describes a backend's body, dropped when the gateway answers with its own.
BODY_HEADERS = frozenset(
    {b"content-type", b"content-encoding", b"content-language", b"content-disposition"}
)

# What frameworks answer for a route (or a method) they do not have, lower-cased.
GENERIC_NOT_FOUND = frozenset(
    {
        "",
        "not found",
        "file not found",
        "404 page not found",
        "404 not found",
        "404: not found",
        "method not allowed",
        "405 method not allowed",
        "not implemented",
        "501 not implemented",
    }
)
MAX_MESSAGE_CHARS = 500
_USAGE_OPTION_WORDS = (b"stream_options", b"include_usage")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def check_whole(data: bytes, secret: str | None) -> None:
    """A 200 that cannot be the whole answer a translated request asked for (one JSON
    object) is the backend's failure, failed over: a stream, anything else that is no
    object, or an error some servers answer with a 200. Told from the first byte and
    the word "error" before any parse: the usual answer costs two searches."""
    if data.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()[:1] != b"{":
        raise UpstreamError(FailureKind.BAD_RESPONSE, "the backend's answer is not a JSON object")
    if b'"error"' not in data:
        return
    document = _json(redacted(data, (secret or "",)))
    if not isinstance(document, dict) or "choices" in document or "data" in document:
        return
    error = document.get("error")
    if isinstance(error, dict) and client_fault(error) is not None:
        return  # (the client's request: its 4xx, in its API's shape, from the translation)
    if isinstance(error, dict) or (isinstance(error, str) and error):
        words = (message_of(document) or "no words")[:MAX_MESSAGE_CHARS]
        raise UpstreamError(
            FailureKind.BAD_RESPONSE, f"the backend answered 200 with an error: {words}"
        )


def message_of(document: Any) -> str | None:
    """The human words of a JSON error body, in the shapes servers use."""
    if not isinstance(document, dict):
        return None
    error = document.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])  # OpenAI's and Anthropic's shape (vLLM, llama.cpp)
    if isinstance(error, str):
        return error  # Ollama's shape
    detail = document.get("detail")
    if isinstance(detail, str):
        return detail  # FastAPI's HTTPException
    if isinstance(detail, list) and detail:
        return "; ".join(_validation_item(item) for item in detail[:5])  # FastAPI's 422
    message = document.get("message")
    return message if isinstance(message, str) else None


def _validation_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)[:100]
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    said = str(item.get("msg", "invalid"))
    return f"{where}: {said}" if where else said


def _words(body: bytes) -> str:
    """The error's words: its JSON message, or the text itself."""
    found = message_of(_json(body))
    if found is not None:
        return found
    return body.decode("utf-8", "replace").strip()


def _generic(words: str) -> bool:
    return words.strip().strip(".!").lower() in GENERIC_NOT_FOUND


def lacks_endpoint(status: int, body: bytes, path: str) -> bool:
    """Whether the answer says the backend does not have `path` at all (so another
    backend of the model may), rather than something about this request."""
    if status in (405, 501):
        return True
    if status != 404:
        return False
    if body.lstrip()[:1] == b"<":
        return True  # an HTML page: a web server's, not the model server's word on a model
    words = _words(body)
    return _generic(words) or path in words


def refuses_usage_option(status: int, body: bytes) -> bool:
    """Whether a 400/422 to a stream the gateway added `stream_options` to refuses that
    option (an older server), not the client's request."""
    if status not in (400, 422):
        return False
    # Its own words, without a validator's echo of the whole input (pydantic's
    # "input_value={...}" repeats the body, option and all).
    words = _words(body).split("input_value=")[0].lower().encode()
    return any(word in words for word in _USAGE_OPTION_WORDS)


def redacted(body: bytes, secrets: tuple[str, ...]) -> bytes:
    """`body` with every known secret (the backend's key) replaced: a backend that
    echoes its Authorization header must not hand the key to a client."""
    for secret in secrets:
        if not secret:
            continue
        escaped = json.dumps(secret)[1:-1]
        for form in {secret, escaped, escaped.replace("/", "\\/")}:
            form_bytes = form.encode()
            if form_bytes in body:
                body = body.replace(form_bytes, b"[REDACTED]")
    return body


def _in_shape(document: Any, api: ErrorShape | None) -> bool:
    """Whether a backend's JSON error is already in the client's API's shape."""
    if not isinstance(document, dict):
        return False
    error = document.get("error")
    if api is ollama_error:
        return isinstance(error, str)  # Ollama's own, on its own routes
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return False
    # OpenAI's; Anthropic's adds the type its SDK's readers look for.
    return api is not anthropic_error or document.get("type") == "error"


def client_error_body(status: int, body: bytes, path: str) -> bytes | None:
    """The error body a client gets instead of `body`, or None to pass `body` on.

    Kept: an error already in its API's shape (OpenAI's; Anthropic's on /v1/messages;
    Ollama's `{"error": "..."}` on /api/ routes). Wrapped in that shape: a path the
    backend lacks (named), and anything else, with the backend's words when it gave
    JSON ones (a server that speaks Messages may answer its errors in OpenAI's shape,
    as the demo backend did)."""
    api = error_shape_for(path)
    if lacks_endpoint(status, body, path):
        message = f"the backend does not offer {path} (HTTP {status})"
        return _shaped(api, status, message, "not_found_error")
    document = _json(body)
    if _in_shape(document, api):
        return None
    said = message_of(document)
    if said:
        message = f"the backend answered HTTP {status}: {said[:MAX_MESSAGE_CHARS]}"
    else:
        message = f"the backend answered HTTP {status} with no error details"
    return _shaped(api, status, message, "not_found_error" if status == 404 else None)


def _shaped(api: ErrorShape | None, status: int, message: str, error_type: str | None) -> bytes:
    body = error_body(status, message, error_type) if api is None else api(status, message)
    return json.dumps(body).encode()


def error_answer(
    status: int, headers: list[tuple[bytes, bytes]], data: bytes, api_key: str | None, path: str
) -> BufferedResponse:
    """A backend's error, as the client gets it: in its API's shape, no secret in it."""
    if api_key:
        data = redacted(data, (api_key,))
    wrapped = client_error_body(status, data, path)
    if wrapped is None:
        return BufferedResponse(status, headers, data)
    kept = [(name, value) for name, value in headers if name not in BODY_HEADERS]
    return BufferedResponse(status, [(b"content-type", b"application/json"), *kept], wrapped)
