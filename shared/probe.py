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


# What the gateway keeps of a backend's model entry, and how long a text may be.
DETAIL_KEYS = ("max_model_len", "owned_by")
MAX_DETAIL_TEXT = 256

ModelDetails = dict[str, dict[str, str | int]]


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    response_time_ms: float
    http_status: int | None = None
    models: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None
    details: ModelDetails = field(default_factory=dict)
    # The backend answered a model list (true even when it lacks the expected model).
    listed: bool = False


def _kept_details(entry: dict[str, object]) -> dict[str, str | int]:
    """The entry's known fields with sane values: a positive int length, a short text owner."""
    kept: dict[str, str | int] = {}
    length = entry.get("max_model_len")
    if type(length) is int and length > 0:
        kept["max_model_len"] = length
    owner = entry.get("owned_by")
    if isinstance(owner, str) and 0 < len(owner) <= MAX_DETAIL_TEXT:
        kept["owned_by"] = owner
    return kept


def read_model_list(body: bytes) -> tuple[tuple[str, ...], ModelDetails]:
    """The model ids of an OpenAI `/v1/models` answer, and what it says of each;
    ValueError if it is not one."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the answer is not valid JSON") from None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        raise ValueError('the answer is JSON but not a model list (no "data" array)')
    ids: list[str] = []
    details: ModelDetails = {}
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ValueError('the model list has an entry without a string "id"')
        ids.append(entry["id"])
        kept = _kept_details(entry)
        if kept:
            details[entry["id"]] = kept
    return tuple(ids), details


def missing_model(result: ProbeResult, expected: str | None) -> ProbeResult:
    """`result`, failed if the backend does not list `expected` (the model a
    registration names): a server that answers "model does not exist" to every
    request is not a healthy backend of that model."""
    if expected is None or not result.healthy or expected in result.models:
        return result
    listed = ", ".join(result.models[:20]) or "none"
    more = f" and {len(result.models) - 20} more" if len(result.models) > 20 else ""
    return ProbeResult(
        False,
        result.response_time_ms,
        result.http_status,
        result.models,
        f"the backend does not list model {expected!r} (it lists: {listed}{more})",
        result.details,
        listed=True,
    )


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
    # Whatever the answer, the block settles its connection: kept when read whole,
    # closed otherwise (an unread error body included).
    async with transport.stream(request, deadline) as response:
        if response.status != 200:
            return response.status, b""
        return 200, await response.read_all(max_bytes, deadline)


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
        models, details = read_model_list(body)
    except ValueError as error:
        return ProbeResult(False, elapsed(), status, error=str(error))
    return ProbeResult(True, elapsed(), status, models, details=details, listed=True)
