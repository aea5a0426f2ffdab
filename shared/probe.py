"""The backend probe: GET `{url}/v1/models`, used by registration and healthd.

Healthy means HTTP 200 with a JSON model list (`{"data": [{"id": ...}]}`)
within the timeout. The reason for a failure is said in words a server owner
can act on, and never contains the URL or the key.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass, field

import httpx

MAX_PROBE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    response_time_ms: float
    http_status: int | None = None
    models: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None


def parse_model_list(body: bytes) -> tuple[str, ...]:
    """The model ids of an OpenAI `/v1/models` answer; ValueError if it is not one."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the answer is not valid JSON") from None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        raise ValueError('the answer is JSON but not a model list (no "data" array)')
    ids = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ValueError('the model list has an entry without a string "id"')
        ids.append(entry["id"])
    return tuple(ids)


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def describe_transport_error(error: Exception, timeout: float) -> str:
    """A short, URL-free reason for a failed connection."""
    causes = _causes(error)
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "connection refused"
    if isinstance(error, httpx.ConnectTimeout):
        return f"connection timed out after {timeout:g}s"
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        return f"no complete answer within {timeout:g}s"
    text = " ".join(str(cause) for cause in causes).lower()
    if (
        any(isinstance(cause, ssl.SSLError) for cause in causes)
        or "ssl" in text
        or ("certificate" in text)
    ):
        return "TLS error: the certificate could not be verified or the handshake failed"
    if (
        "name or service not known" in text
        or "nodename nor servname" in text
        or ("temporary failure in name resolution" in text)
    ):
        return "DNS lookup failed"
    if "refused" in text:
        return "connection refused"
    if isinstance(error, httpx.RemoteProtocolError):
        return "the backend closed the connection or sent an invalid HTTP answer"
    if isinstance(error, httpx.ConnectError):
        return "could not connect"
    if isinstance(error, httpx.ReadError | httpx.WriteError):
        return "the connection broke while talking to the backend"
    return f"request failed ({type(error).__name__})"


async def _fetch_models(
    client: httpx.AsyncClient, base_url: str, api_key: str | None, timeout: float, max_bytes: int
) -> tuple[int, bytes]:
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    async with client.stream(
        "GET", f"{base_url}/v1/models", headers=headers, timeout=timeout
    ) as response:
        if response.status_code != 200:
            return response.status_code, b""
        chunks = bytearray()
        async for chunk in response.aiter_bytes():
            chunks.extend(chunk)
            if len(chunks) > max_bytes:
                raise ValueError(f"the answer is larger than {max_bytes // 1024} KiB")
        return 200, bytes(chunks)


async def probe_backend(
    client: httpx.AsyncClient,
    base_url: str,
    api_key: str | None,
    *,
    timeout: float,
    max_bytes: int = MAX_PROBE_BYTES,
) -> ProbeResult:
    """Probe one backend; never raises for anything the backend does."""
    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 2)

    try:
        async with asyncio.timeout(timeout):
            status, body = await _fetch_models(client, base_url, api_key, timeout, max_bytes)
    except ValueError as error:
        return ProbeResult(False, elapsed(), 200, error=str(error))
    except (httpx.HTTPError, OSError, TimeoutError) as error:
        return ProbeResult(False, elapsed(), error=describe_transport_error(error, timeout))
    if status != 200:
        return ProbeResult(False, elapsed(), status, error=f"GET /v1/models answered HTTP {status}")
    try:
        models = parse_model_list(body)
    except ValueError as error:
        return ProbeResult(False, elapsed(), status, error=str(error))
    return ProbeResult(True, elapsed(), status, models)
