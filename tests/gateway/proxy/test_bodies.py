"""What the proxy reads of a body, as tables: JSON and multipart forms, and the rename."""

from __future__ import annotations

import json

import pytest

from gateway.proxy.bodies import Target, parse_target, with_model
from shared.errors import InvalidRequest

FORM = "multipart/form-data; boundary=b0undary"


def form(*parts: tuple[str, bytes, str | None]) -> bytes:
    chunks = []
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--b0undary\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        chunks.append(value + b"\r\n")
    chunks.append(b"--b0undary--\r\n")
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model": "m"}', Target("m")),
        (b'{"model": "m", "stream": true}', Target("m", True)),
        (b'{"model": "m", "previous_response_id": "resp_1"}', Target("m", False, "resp_1")),
    ],
)
def test_json_targets(body: bytes, expected: Target) -> None:
    assert parse_target(body, "application/json") == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"stream": true}', "model"),
        (b'{"model": ""}', "model"),
        (b'{"model": "m", "stream": "yes"}', "stream"),
        (b'{"model": "m", "previous_response_id": 7}', "previous_response_id"),
    ],
)
def test_json_errors_name_the_field(body: bytes, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_target(body, None)
    assert caught.value.param == param


def test_a_form_target_and_where_its_model_sits() -> None:
    audio = bytes(range(256)) * 8  # CR LF and dashes inside the file
    body = form(("file", audio, "a.wav"), ("model", b"whisper-1", None), ("stream", b"true", None))
    target = parse_target(body, FORM)
    assert (target.model, target.stream) == ("whisper-1", True)
    assert target.model_span is not None
    start, end = target.model_span
    assert body[start:end] == b"whisper-1"
    renamed = with_model(body, "/models/whisper", target.model_span)
    assert renamed == body.replace(b"whisper-1", b"/models/whisper")
    assert parse_target(renamed, FORM).model == "/models/whisper"


def test_a_file_named_model_is_not_the_model() -> None:
    body = form(("model", b"fake", "model.txt"))
    with pytest.raises(InvalidRequest) as caught:
        parse_target(body, FORM)
    assert caught.value.param == "model"


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"--b0undary\r\nbroken", FORM, "malformed"),
        (form(("model", b"m", None)), "multipart/form-data", "no boundary"),
        (form(("model", b"m", None), ("stream", b"maybe", None)), FORM, "stream"),
        (form(("model", b"m" * 5000, None)), FORM, "too long"),
    ],
)
def test_bad_forms_are_400(body: bytes, content_type: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_target(body, content_type)
    assert fragment in caught.value.message


def test_a_json_rename_keeps_every_other_field() -> None:
    body = '{"model": "alias", "messages": [{"content": "héllo"}], "n": 2}'.encode()
    assert json.loads(with_model(body, "real")) == {
        "model": "real",
        "messages": [{"content": "héllo"}],
        "n": 2,
    }
