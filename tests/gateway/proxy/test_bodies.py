"""What the proxy reads of a body, as tables: JSON and multipart forms, and the rename."""

from __future__ import annotations

import json

import pytest

from gateway.proxy.bodies import MAX_MULTIPART_PARTS, Target, parse_target, with_model
from shared.errors import InvalidRequest, PayloadTooLarge

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


@pytest.mark.parametrize(
    ("body", "renamed"),
    [
        (b' {"model": "chat"}', b' {"model": "real"}'),
        (b'{\n\t"model" :\r "chat" \n}\n', b'{\n\t"model" :\r "real" \n}\n'),
        # Everything else byte for byte: a number no float holds, a lone surrogate.
        (b'{"model":"chat","n":1e999,"m":"\\ud800"}', b'{"model":"real","n":1e999,"m":"\\ud800"}'),
        (b'{"mod\\u0065l": "chat"}', b'{"mod\\u0065l": "real"}'),  # an escaped key
        (b'{"model": "a", "x": 1, "model": "b"}', b'{"model": "real", "x": 1, "model": "real"}'),
        (
            b'{"messages": [{"model": "keep"}], "tools": {"model": 1}, "model": "chat"}',
            b'{"messages": [{"model": "keep"}], "tools": {"model": 1}, "model": "real"}',
        ),
        (b'{"model": 7}', b'{"model": "real"}'),
        ('{"model": "chät", "c": "é"}'.encode(), '{"model": "real", "c": "é"}'.encode()),
        (b'\xef\xbb\xbf{"model": "chat"}', b'\xef\xbb\xbf{"model": "real"}'),  # a BOM
        ('{"model": "chat"}'.encode("utf-16"), '{"model": "real"}'.encode("utf-16")),
        ('{"model": "chat"}'.encode("utf-16-be"), '{"model": "real"}'.encode("utf-16-be")),
    ],
)  # fmt: skip
def test_a_json_rename_changes_only_the_models_value(body: bytes, renamed: bytes) -> None:
    assert with_model(body, "real") == renamed


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[]", "must be a JSON object"),
        (b'{"messages": []}', "no model"),
        (b'{"model": "a",}', "not valid JSON"),
        (b'{"model": "a"} {}', "extra data"),
        (b'{"model": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        (b'{"model": "a", "x": 1' + b"0" * 5000 + b"}", "not valid JSON"),
        (b'{"model": "\xff"}', "not valid JSON"),
        (b"", "must be a JSON object"),
    ],
)
def test_a_body_that_cannot_be_renamed_is_a_400(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        with_model(body, "real")
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "\\ud800"}', "model"),
        (b'{"model": "m\\udfff"}', "model"),
        (b'{"model": "m", "previous_response_id": "resp_\\ud800"}', "previous_response_id"),
    ],
)
def test_a_lone_surrogate_where_the_gateway_reads_is_a_400(body: bytes, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_target(body, "application/json")
    assert caught.value.param == param and "surrogate" in caught.value.message


def test_a_lone_surrogate_elsewhere_is_read_and_kept() -> None:
    body = b'{"model": "m", "messages": "\\ud800", "x": "\\ud83d\\ude00"}'
    assert parse_target(body, None) == Target("m")
    assert with_model(body, "n") == body.replace(b'"m"', b'"n"', 1)


@pytest.mark.parametrize(
    ("parts", "model", "stream"),
    [
        ((("model", b"audio", None), ("model", b"ok", None)), "ok", False),
        ((("model", b"a", None), ("file", b"RIFF", "a.wav"), ("model", b"ok", None)), "ok", False),
        ((("model", b"m", None), ("stream", b"true", None), ("stream", b"false", None)), "m", 0),
        ((("model", b"m", None), ("stream", b"maybe", None), ("stream", b"true", None)), "m", 1),
    ],
)  # fmt: skip
def test_a_form_field_sent_twice_is_read_by_its_last_value(
    parts: tuple[tuple[str, bytes, str | None], ...], model: str, stream: bool
) -> None:
    """#19 item 21: the values were concatenated ("audio" + "ok"), so the gateway routed
    on a model the backend (whose form parser keeps the last) was not asked for."""
    body = form(*parts)
    target = parse_target(body, FORM)
    assert (target.model, target.stream) == (model, stream)
    assert target.model_span is not None
    renamed = with_model(body, "real", target.model_span)
    assert renamed == body.replace(f"\r\n\r\n{model}\r\n".encode(), b"\r\n\r\nreal\r\n")
    assert parse_target(renamed, FORM).model == "real"


@pytest.mark.parametrize(
    ("count", "refused"), [(MAX_MULTIPART_PARTS, False), (MAX_MULTIPART_PARTS + 1, True)]
)
def test_a_form_has_a_bounded_number_of_parts(count: int, refused: bool) -> None:
    """#19 item 19: a form of 190,000 tiny parts took a second of the event loop."""
    body = form(("model", b"m", None), *[("x", b"", None)] * (count - 1))
    if not refused:
        assert parse_target(body, FORM).model == "m"
        return
    with pytest.raises(PayloadTooLarge) as caught:
        parse_target(body, FORM)
    assert caught.value.status_code == 413
    assert f"more than {MAX_MULTIPART_PARTS} parts" in caught.value.message
