"""Small helpers for handlers: read a validated body, answer JSON and errors."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from shared.errors import GatewayError, InvalidRequest, body_for, error_body

ModelT = TypeVar("ModelT", bound=BaseModel)


_TIME_ERRORS = frozenset(
    {"datetime_parsing", "datetime_from_date_parsing", "datetime_type", "date_parsing"}
)
# The two kinds of pattern the API's fields use, with their lengths (a value that is only
# too long fails the same pattern as one with a bad character, so both are said).
_PRINTABLE = re.compile(r"\^\[\^\\x00-\\x1f\\x7f\](?:\+|\{(\d+),(\d+)\})\$")
_NAME = re.compile(r"\^\[A-Za-z0-9\]\[A-Za-z0-9_.-\]\{0,(\d+)\}\$")


def _in_words(item: Mapping[str, Any]) -> str:
    """Pydantic's message, where it is a regular expression or a parser's detail, said as
    what the field takes."""
    kind = item["type"]
    if kind in _TIME_ERRORS:
        return "should be an ISO 8601 date or time, e.g. 2027-02-01 or 2027-02-01T18:00:00Z"
    if kind == "string_pattern_mismatch":
        pattern = str((item.get("ctx") or {}).get("pattern", ""))
        if printable := _PRINTABLE.fullmatch(pattern):
            least, most = printable.groups()
            length = f" of {least} to {most} characters" if most else ""
            return (
                f"should be printable text{length}, without control characters (a newline, a tab)"
            )
        if name := _NAME.fullmatch(pattern):
            return (
                f"should be 1 to {int(name[1]) + 1} characters, starting with a letter or"
                " digit and holding only letters, digits, _ . -"
            )
    return str(item["msg"]).removeprefix("Value error, ")


def describe_validation_error(error: ValidationError) -> tuple[str, str | None]:
    """One readable sentence for all problems, and the first field's name (OpenAI's `param`)."""
    problems = []
    first_param = None
    for item in error.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"])
        message = _in_words(item)
        problems.append(f"{location}: {message}" if location else message)
        if first_param is None and location:
            first_param = location
    return "; ".join(problems), first_param


def not_json_constant(name: str) -> float:
    """Python's parser reads NaN, Infinity and -Infinity, which JSON (RFC 8259) does not
    have: where a strict parse is asked, the body is refused, not passed on with them."""
    raise ValueError(f"{name} is not a JSON number")


def finite_number(text: str) -> float:
    """A JSON number with a fraction or an exponent, refused when no double holds it
    (1e400 would be read as an infinity, and written on as Infinity, which is not
    JSON). Called only for such numbers: a chat has a few (temperature, top_p)."""
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {text[:24]} is out of range")
    return number


# Built once: json.loads with hooks builds a decoder at each call (3 µs). The bytes are
# decoded as json.loads decodes them (UTF-8, or UTF-16/32 by their first bytes).
_strict_decode = json.JSONDecoder(
    parse_constant=not_json_constant, parse_float=finite_number
).decode


def parse_json_object(
    raw: bytes, *, empty_hint: str = "send a JSON object", strict: bool = False
) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it. `strict`:
    NaN, Infinity and a number no double holds are refused too (Python's parser reads
    them; Ollama's and Anthropic's APIs do not, and a translation could not write them
    on as JSON)."""
    if not raw.strip():
        raise refused_json("empty", empty_hint=empty_hint)
    try:
        if strict:
            document = _strict_decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
        else:
            document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise refused_json("invalid", str(error)) from None
    except RecursionError:
        # The parser gives up at Python's recursion limit (~1,000 levels), at once.
        raise refused_json("deep") from None
    if not isinstance(document, dict):
        raise refused_json("not_object")
    return document


def refused_json(
    kind: str, detail: str = "", *, empty_hint: str = "send a JSON object"
) -> InvalidRequest:
    """The 400 for a body that is not a JSON object, by kind: one wording, wherever the
    body was parsed (here, or in a child process: gateway/splice/child_parse.py)."""
    messages = {
        "empty": f"the request body is empty; {empty_hint}",
        "invalid": f"the request body is not valid JSON: {detail}",
        "deep": "the request body is nested too deeply",
        "not_object": "the request body must be a JSON object",
    }
    return InvalidRequest(messages.get(kind, messages["invalid"]))


def validate(model: type[ModelT], document: dict[str, Any]) -> ModelT:
    """`document` as `model`, or a 400 naming every field that is wrong."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        message, param = describe_validation_error(error)
        raise InvalidRequest(f"invalid request: {message}", param=param) from None


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    """The request body as `model`, or a 400 that says exactly what is wrong."""
    return validate(model, parse_json_object(await request.body()))


def json_response(
    content: BaseModel | Sequence[BaseModel] | dict[str, Any], status: int = 200
) -> JSONResponse:
    if isinstance(content, BaseModel):
        payload: Any = content.model_dump(mode="json")
    elif isinstance(content, Sequence):
        payload = [item.model_dump(mode="json") for item in content]
    else:
        payload = content
    return JSONResponse(payload, status_code=status)


def error_response(error: GatewayError) -> JSONResponse:
    return JSONResponse(body_for(error), status_code=error.status_code, headers=error.headers)


def status_error_response(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status_code, message), status_code=status_code, headers=headers)
