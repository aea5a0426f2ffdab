"""The body surgery as properties (#19 items 1 and 9): for any JSON object, however it is
written (spaces, escaped keys, duplicates, lone surrogates, numbers no float holds),
the rename and the usage option change what they must and nothing else; for any bytes
at all they answer or raise the typed 400, never anything else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.accounting.stream_usage import with_usage_asked
from gateway.proxy.bodies import with_model
from shared.errors import InvalidRequest

CHECKS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.one_of(st.text(max_size=8), st.sampled_from(["\ud800", "a\udfffb", "é", "😀", '"\\']))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),  # infinities are written 1e999 below
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
keys = st.one_of(texts, st.sampled_from(["model", "stream_options", "include_usage", "stream"]))
spaces = st.sampled_from(["", " ", "\n", "\t ", "\r\n  "])


@st.composite
def written(draw: st.DrawFn, value: Any) -> str:
    """`value` as JSON text in one of the ways clients write it."""
    if isinstance(value, dict):
        return draw(object_text(list(value.items())))
    if isinstance(value, list):
        items = [draw(written(item)) for item in value]
        gap = draw(spaces)
        return "[" + gap + f",{gap}".join(items) + gap + "]"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "1e999" if value > 0 else "-1e999"
    if isinstance(value, str):
        return draw(string_text(value))
    return json.dumps(value)


@st.composite
def string_text(draw: st.DrawFn, value: str) -> str:
    style = draw(st.sampled_from(["ascii", "raw", "escaped"]))
    if style == "escaped":  # every character as \\uXXXX (non-BMP ones as their pair)
        escaped = (json.dumps(c)[1:-1] if ord(c) > 0xFFFF else f"\\u{ord(c):04x}" for c in value)
        return '"' + "".join(escaped) + '"'
    return json.dumps(value, ensure_ascii=style == "ascii")


@st.composite
def object_text(draw: st.DrawFn, members: list[tuple[str, Any]]) -> str:
    gap = draw(spaces)
    parts = [
        f"{draw(string_text(key))}{draw(spaces)}:{draw(spaces)}{draw(written(value))}"
        for key, value in members
    ]
    return "{" + gap + f"{gap},{gap}".join(parts) + gap + "}"


@st.composite
def bodies(draw: st.DrawFn, with_model_member: bool) -> tuple[bytes, dict[str, Any]]:
    """A request body and what the standard parser reads of it (the last duplicate)."""
    members = draw(st.lists(st.tuples(keys, values), max_size=6))
    if with_model_member:
        at = draw(st.integers(0, len(members)))
        members.insert(at, ("model", draw(texts)))
        members = [(k, v) for k, v in members if k != "model" or isinstance(v, str)]
    text = draw(spaces) + draw(object_text(members)) + draw(spaces)
    body = text.encode("utf-8", "surrogatepass")
    return body, json.loads(body)


@CHECKS
@given(bodies(with_model_member=True), texts)
def test_with_model_renames_the_model_and_keeps_every_other_member(
    case: tuple[bytes, dict[str, Any]], model: str
) -> None:
    body, document = case
    assert json.loads(with_model(body, model)) == {**document, "model": model}


@CHECKS
@given(bodies(with_model_member=False))
def test_with_usage_asked_sets_the_option_and_keeps_every_other_member(
    case: tuple[bytes, dict[str, Any]],
) -> None:
    body, document = case
    options = document.get("stream_options")
    expected = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    assert json.loads(with_usage_asked(body)) == {**document, "stream_options": expected}


def _mangled(body: bytes, at: int, junk: bytes) -> bytes:
    at = at % (len(body) + 1)
    return body[:at] + junk + body[at + len(junk) :]


@CHECKS
@given(
    st.one_of(
        st.binary(max_size=64),
        st.builds(
            _mangled,
            bodies(with_model_member=True).map(lambda case: case[0]),
            st.integers(0, 200),
            st.sampled_from([b"", b"{", b"}", b",", b'"', b"\\", b"\xff", b"\x00", b"[", b":"]),
        ),
    )
)
def test_any_bytes_are_answered_or_a_typed_400(body: bytes) -> None:
    for change in (lambda b: with_model(b, "x"), with_usage_asked):
        try:
            assert isinstance(change(body), bytes)
        except InvalidRequest as refused:
            assert refused.status_code == 400
