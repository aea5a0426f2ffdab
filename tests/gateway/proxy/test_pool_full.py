"""A backend's connections all busy under our own BACKEND_MAX_CONNECTIONS: 503 with a
Retry-After, and nothing counted against the backend (the limit is ours)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

from tests.gateway.proxy.test_proxy import CHAT, register, wait_routable
from tests.raw_backend import RawBackend, Seen, Sleep, Step, Write, completion, http, ok
from tests.support import ThreadedServer, wait_for


def test_a_full_pool_is_503_with_retry_after_and_not_the_backends_fault(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    """One connection allowed, held by a slow answer; a stream asked meanwhile waits for
    it until its first-byte deadline. One fault would eject the backend (and send the
    next request to the second tier): the wait must not count as one."""
    gateway = start_gateway(
        rate_limit_per_minute=0,
        slow_start_seconds=0,
        backend_max_connections=1,
        first_byte_timeout_seconds=1,
        max_retry_attempts=0,
        outlier_consecutive_failures=1,
    )

    def slow_first(seen: Seen) -> list[Step]:
        # The first chat is the slow one, whatever came before it: the load scraper's
        # GET /metrics (two backends serve "m", so it runs) twice arrived first on CI and
        # took the sleep, and the chat, answered at once, freed the connection. 6 s: far
        # past the stream's one second of waiting, however late a loaded machine sends it.
        answer = Write(http(200, completion()))
        slow = seen.method == "POST" and first.posts == 1
        return [Sleep(6), answer] if slow else [answer]

    with RawBackend(slow_first) as first, RawBackend(ok) as second:
        first_id = register(gateway, "m", first.url, priority=0)
        register(gateway, "m", second.url, priority=1)
        wait_routable(gateway, "m", 2)
        url = f"{gateway.url}/v1/chat/completions"
        slow: list[httpx.Response] = []
        holder = threading.Thread(
            target=lambda: slow.append(httpx.post(url, json=CHAT, timeout=20))
        )
        holder.start()
        wait_for(lambda: first.posts == 1, what="the slow request to hold the connection")

        waited = httpx.post(url, json={**CHAT, "stream": True}, timeout=20)
        holder.join(timeout=20)

        assert waited.status_code == 503 and waited.headers["retry-after"] == "1"
        error = waited.json()["error"]
        assert (
            error["type"] == "service_unavailable" and "BACKEND_MAX_CONNECTIONS" in error["message"]
        )
        assert slow[0].status_code == 200
        after = httpx.post(url, json=CHAT, timeout=20)  # still to the first tier: not ejected
        assert after.status_code == 200 and after.headers["x-gateway-server-id"] == first_id
        assert first.posts == 2 and second.posts == 0
