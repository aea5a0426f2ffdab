"""Bodies through a real gateway (#19 items 19 and 21): a form's repeated field, a form
of too many parts, and a large body parsed off the event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable

import httpx
import pytest

from gateway.proxy.bodies import MAX_MULTIPART_PARTS, READ_MEMBERS, Target, parse_target
from gateway.proxy.endpoint import LARGE_BODY_BYTES, parse_large_target, read_target
from gateway.splice.child_parse import ChildFailed, members_in_child
from shared.errors import InvalidRequest
from tests.gateway.proxy.test_apis import ManyAPIs, register
from tests.support import ThreadedServer

BOUNDARY = "b0undary"


def form(*parts: tuple[str, bytes]) -> bytes:
    """A multipart body; a part named "file" is an upload."""
    chunks = []
    for name, value in parts:
        disposition = f'form-data; name="{name}"'
        if name == "file":
            disposition += '; filename="clip.wav"'
        chunks.append(f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        chunks.append(value + b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


def upload(gateway: ThreadedServer, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/audio/transcriptions",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        timeout=15,
    )


def test_a_repeated_model_field_is_routed_by_its_last_value(gateway: ThreadedServer) -> None:
    """The values were concatenated ("audio" + "whisper-1"): the gateway routed on a model
    nobody serves, while the backend's form parser reads the last value."""
    audio = b"RIFF" + bytes(range(256)) * 64  # CR LF and dashes inside
    plain, renaming = ManyAPIs("plain"), ManyAPIs("renaming")
    with ThreadedServer(plain.app) as one, ThreadedServer(renaming.app) as other:
        register(gateway, one.url, model_name="m")
        register(gateway, other.url, model_name="whisper-1", backend_model="/models/whisper")

        sent = form(("model", b"audio"), ("file", audio), ("model", b"m"))
        heard = upload(gateway, sent)
        assert heard.status_code == 200, heard.text
        assert heard.json()["text"].startswith(f"m heard {len(audio)} bytes")
        assert plain.seen[-1][2] == sent  # byte for byte

        sent = form(("model", b"audio"), ("file", audio), ("model", b"whisper-1"))
        heard = upload(gateway, sent)
        assert heard.status_code == 200, heard.text
        assert heard.json()["text"].startswith(f"/models/whisper heard {len(audio)} bytes")
        # Only the last value renamed; the first left as the client sent it.
        assert renaming.seen[-1][2] == form(
            ("model", b"audio"), ("file", audio), ("model", b"/models/whisper")
        )


def test_a_form_of_too_many_parts_is_a_413(gateway: ThreadedServer) -> None:
    plain = ManyAPIs("plain")
    with ThreadedServer(plain.app) as server:
        register(gateway, server.url, model_name="m")
        tiny = [("x", b"")] * (MAX_MULTIPART_PARTS - 1)  # with the model and the file: one over
        refused = upload(gateway, form(("model", b"m"), ("file", b"RIFF"), *tiny))
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert f"more than {MAX_MULTIPART_PARTS} parts" in error["message"]
        assert plain.seen == []
        accepted = upload(gateway, form(("model", b"m"), ("file", b"RIFF"), *tiny[1:]))
        assert accepted.status_code == 200, accepted.text


def test_a_large_json_body_is_routed_and_forwarded_byte_for_byte(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    gateway = start_gateway(rate_limit_per_minute=0)
    plain = ManyAPIs("plain")
    with ThreadedServer(plain.app) as server:
        register(gateway, server.url, model_name="m")
        words = ["word"] * (LARGE_BODY_BYTES // 7)
        sent = json.dumps({"model": "m", "query": "q", "documents": words}).encode()
        assert len(sent) > LARGE_BODY_BYTES
        ranked = httpx.post(f"{gateway.url}/rerank", content=sent, timeout=30)
        assert ranked.status_code == 200, ranked.text
        assert plain.seen[-1] == ("POST", "/rerank", sent)


async def test_a_large_body_is_parsed_in_a_thread_while_small_ones_go_on() -> None:
    """The parse of a large body is held (an event) in its worker thread: a small body's
    parse, on the event loop itself, completes meanwhile. No timing involved."""
    release = threading.Event()
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    threads: dict[str, int] = {}

    def held(body: bytes, content_type: str | None, stream_default: bool) -> Target:
        threads["large" if len(body) > LARGE_BODY_BYTES else "small"] = threading.get_ident()
        if len(body) > LARGE_BODY_BYTES:
            loop.call_soon_threadsafe(started.set)
            assert release.wait(timeout=30)
        return parse_target(body, content_type, stream_default)

    large = json.dumps({"model": "big", "input": "x" * LARGE_BODY_BYTES}).encode()
    parsing = asyncio.create_task(
        read_target(large, "application/json", False, parse=held, parse_large=held)
    )
    try:
        await asyncio.wait_for(started.wait(), timeout=30)
        small = await read_target(b'{"model": "small"}', None, False, parse=held, parse_large=held)
        assert small == Target("small")
        assert not parsing.done()  # the large one is still being parsed
    finally:
        release.set()
    assert await parsing == Target("big")
    assert threads["small"] == threading.get_ident()  # no thread hop for a small body
    assert threads["large"] != threading.get_ident()


PAD = " " * (LARGE_BODY_BYTES + 1)  # JSON whitespace, to make any body large


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (json.dumps({"model": "m", "messages": [{"content": "hi"}] * 100_000}).encode(), None),
        (b'{"model": "m", "stream": true, "stream_options": {"include_usage": true}}', None),
        (b'{"model": "m", "input": "x", "previous_response_id": "resp_1"}', None),
        (b'{"model": "m", "stream": "yes"}', None),
        (b'{"model": "m\\udc00"}', None),
        (b'{"messages": []}', None),
        (b'{"model": "m", "n": 1e999, "x": NaN}', None),
        (b'{"model": "m",}', None),
        (b'{"model": "m"} []', None),
        (b"[1, 2]", None),
        (b"", None),
        (b'{"model": "m", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", None),
        ('{"model": "m"}'.encode("utf-16"), None),
        (b'{"model": "\xff"}', None),
    ],
)
def test_a_large_body_gets_the_same_target_or_400_as_a_small_one(
    body: bytes, content_type: str | None
) -> None:
    """parse_large_target (a child process for JSON) answers what parse_target does."""
    if not body.startswith(b"\xff\xfe"):
        body = body + PAD.encode()
    else:
        body = body + PAD.encode("utf-16-le")
    assert len(body) > LARGE_BODY_BYTES
    expected: Target | tuple[str, str | None]
    try:
        expected = parse_target(body, content_type, False)
    except InvalidRequest as refused:
        expected = (refused.message, refused.param)
    try:
        got: Target | tuple[str, str | None] = parse_large_target(body, content_type, False)
    except InvalidRequest as refused:
        got = (refused.message, refused.param)
    assert got == expected


def test_no_child_is_a_typed_failure_the_caller_recovers_from() -> None:
    with pytest.raises(ChildFailed):
        members_in_child(b'{"model": "m"}', READ_MEMBERS, python="/nonexistent/python")
    assert members_in_child(b'{"model": "m", "temperature": 1}', READ_MEMBERS) == {"model": "m"}
