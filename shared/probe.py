"""The backend probe: GET `{url}/v1/models`, used by registration and healthd.

Healthy means HTTP 200 with a JSON model list (`{"data": [{"id": ...}]}`)
within the timeout. The probe goes through the same Transport as the proxy
(shared/upstream/), so it connects to the address it checked, the way the
proxy does, and its failures are the same typed `FailureKind`s. The reason for
a failure is said in words a server owner can act on, and never contains the
URL or the key.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from shared.failures import FailureKind
from shared.upstream import Transport, UpstreamError, UpstreamRequest

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


def describe_failure(error: UpstreamError, *, timeout: float, max_bytes: int) -> str:
    """The words for a failed probe: the failure's own, with the limits it ran into."""
    if error.kind is FailureKind.CONNECT_TIMEOUT:
        return f"connection timed out after {timeout:g}s"
    if error.kind is FailureKind.TIMEOUT:
        return f"no complete answer within {timeout:g}s"
    if error.kind is FailureKind.TOO_LARGE:
        return f"the answer is larger than {max_bytes // 1024} KiB"
    return error.reason


async def _fetch_models(
    transport: Transport, base_url: str, api_key: str | None, deadline: float, max_bytes: int
) -> tuple[int, bytes]:
    headers = {
        "Accept": "application/json",
        "Accept-Encoding": "identity",
        "User-Agent": "multiverse-gateway",
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = UpstreamRequest(base_url, "/v1/models", headers, method="GET")
    response = await transport.send(request, deadline)
    try:
        if response.status != 200:
            return response.status, b""
        body = await response.read_all(max_bytes, deadline)
    except BaseException:
        response.close()
        raise
    response.release()
    return 200, body


async def probe_backend(
    transport: Transport,
    base_url: str,
    api_key: str | None,
    *,
    timeout: float,
    max_bytes: int = MAX_PROBE_BYTES,
) -> ProbeResult:
    """Probe one backend; never raises for anything the backend does."""
    started = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + timeout

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 2)

    try:
        status, body = await _fetch_models(transport, base_url, api_key, deadline, max_bytes)
    except UpstreamError as error:
        reason = describe_failure(error, timeout=timeout, max_bytes=max_bytes)
        return ProbeResult(False, elapsed(), error=reason)
    if status != 200:
        return ProbeResult(False, elapsed(), status, error=f"GET /v1/models answered HTTP {status}")
    try:
        models = parse_model_list(body)
    except ValueError as error:
        return ProbeResult(False, elapsed(), status, error=str(error))
    return ProbeResult(True, elapsed(), status, models)
