"""healthd's probes hold no connection after they end, whatever the backend answers.

A probe that got a non-200 answer used to keep its connection (neither kept
for reuse nor closed): after BACKEND_MAX_CONNECTIONS such probes every later
one waited for a free connection and was reported "no complete answer",
with that many sockets held open on the backend.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

from shared.db import Database
from tests.healthd.test_daemon import add_server, checks
from tests.support import process_settings, start_healthd, wait_for


def unauthorized() -> bytes:
    body = b'{"error": "no such api key"}'
    return (
        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


class KeptAlive401:
    """A raw-socket backend answering every request 401 on a kept-alive connection;
    it counts the connections open at once (the most seen, and now)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.open = 0
        self.most_open = 0
        self.answered = 0

    def __enter__(self) -> KeptAlive401:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop
        )
        self.server = started.result(timeout=10)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def shut() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while await reader.readuntil(b"\r\n\r\n"):  # GET: no body
                writer.write(unauthorized())
                await writer.drain()
                self.answered += 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            writer.close()


def test_a_backend_answering_401_stays_http_401_and_holds_one_socket(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    """A real healthd, BACKEND_MAX_CONNECTIONS=2, probing a 401 backend three times as often."""
    settings = process_settings(
        tmp_path,
        database_url,
        HEALTH_CHECK_INTERVAL_SECONDS="1",
        HEALTH_CHECK_TIMEOUT_SECONDS="1",
        BACKEND_MAX_CONNECTIONS="2",
    )
    with KeptAlive401() as backend:
        server_id = add_server(database, backend.url)
        healthd = start_healthd(tmp_path, settings)
        try:
            wait_for(lambda: len(checks(database, server_id)) >= 6, timeout=30, what="6 probes")
        finally:
            healthd.send_signal(signal.SIGTERM)
            assert healthd.wait(timeout=20) == 0
        errors = [check.error_message for check in checks(database, server_id)]
        assert errors == ["GET /v1/models answered HTTP 401"] * len(errors)
        assert backend.most_open <= 1
