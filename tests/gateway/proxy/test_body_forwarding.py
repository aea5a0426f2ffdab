"""Bodies through a real gateway (#19 item 21): a form's repeated field."""

from __future__ import annotations

import httpx

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
