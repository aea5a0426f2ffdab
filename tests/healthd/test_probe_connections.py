"""healthd's probes hold no connection after they end, whatever the backend answers.

A probe that got a non-200 answer used to keep its connection (neither kept
for reuse nor closed): after BACKEND_MAX_CONNECTIONS such probes every later
one waited for a free connection and was reported "no complete answer",
with that many sockets held open on the backend.
"""

from __future__ import annotations

import signal
from pathlib import Path

from shared.db import Database
from tests.healthd.test_daemon import add_server, checks
from tests.raw_backend import RawBackend, Seen, Step, Write, http
from tests.support import process_settings, start_healthd, wait_for


def unauthorized(seen: Seen) -> list[Step]:
    """Every request, /v1/models included, answered 401 on a kept-alive connection."""
    return [Write(http(401, b'{"error": "no such api key"}'))]


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
    with RawBackend(unauthorized, lists_models=False) as backend:
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
