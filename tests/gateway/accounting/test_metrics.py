"""Prometheus metrics (#15 item 1), read back after known traffic through two real
worker processes: the counts are exact, whichever worker served each request."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY
from tests.gateway.accounting.test_stream_usage import CHAT, UsageBackend
from tests.healthd.test_daemon import until
from tests.support import (
    GatewayProcess,
    ThreadedServer,
    free_port,
    process_settings,
    start_healthd,
    wait_for,
)

HEADERS = {"X-API-Key": ADMIN_KEY}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def test_counts_are_exact_across_two_workers(tmp_path: Path, database_url: str) -> None:
    backend = UsageBackend()
    settings = process_settings(tmp_path, database_url, WORKERS="2", RATE_LIMIT_PER_MINUTE="0")
    with ThreadedServer(backend.app) as server, GatewayProcess(tmp_path, settings) as gateway:
        registered = httpx.post(
            f"{gateway.url}/admin/register",
            json={"endpoint_url": server.url},
            headers=HEADERS,
            timeout=15,
        )
        backend_id = registered.json()["registration_id"]

        def routable() -> bool:
            return bool(httpx.get(f"{gateway.url}/v1/models").json()["data"])

        wait_for(routable, what="both workers to route to the backend")
        for _ in range(12):  # new connections: the kernel spreads them over the workers
            with httpx.stream(
                "POST", f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=15
            ) as response:
                assert response.status_code == 200
                response.read()
        missing = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": "x"})
        assert missing.status_code == 404

        chat = {"model": "m", "backend": backend_id}
        ok = {**chat, "endpoint": "/v1/chat/completions", "code": "200"}

        def scraped() -> str:  # each worker hands its counts over every second
            text = httpx.get(f"{gateway.url}/metrics").text
            return text if value(text, "gateway_requests_total", **ok) == 12 else ""

        text = wait_for(scraped, timeout=10, what="both workers' counts")
        # Streams whose client asked for no usage: counted all the same.
        assert value(text, "gateway_tokens_total", **chat, kind="prompt") == 12 * 9
        assert value(text, "gateway_tokens_total", **chat, kind="completion") == 12 * 3
        assert value(text, "gateway_request_duration_seconds_count", **chat) == 12
        assert value(text, "gateway_time_to_first_token_seconds_count", **chat) == 12
        # Gaps between relayed reads: events that arrive together are one read.
        assert 0 < value(text, "gateway_inter_token_seconds_count", model="m") <= 12 * 4
        assert value(text, "gateway_backend_in_flight", backend=backend_id) == 0
        assert value(text, "gateway_backend_healthy", backend=backend_id, model="m") == 1
        assert value(text, "gateway_registry_snapshot_age_seconds") < 5
        assert 'model="x"' not in text  # a model nobody serves makes no label


def test_a_metrics_key_is_required_when_set(tmp_path: Path, database_url: str) -> None:
    key = "metrics-secret-0123456789"
    settings = process_settings(tmp_path, database_url, METRICS_API_KEY=key)
    with GatewayProcess(tmp_path, settings) as gateway:
        url = f"{gateway.url}/metrics"
        missing = httpx.get(url)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == 401
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and key not in wrong.text
        right = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
        assert right.status_code == 200 and "gateway_registry_snapshot_age_seconds" in right.text


def test_healthd_reports_its_probes(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    settings = process_settings(
        tmp_path,
        database_url,
        HEALTH_CHECK_INTERVAL_SECONDS="1",
        HEALTHD_METRICS_PORT=str(port),
    )
    backend = UsageBackend()
    with ThreadedServer(backend.app) as server, GatewayProcess(tmp_path, settings) as gateway:
        httpx.post(
            f"{gateway.url}/admin/register",
            json={"endpoint_url": server.url},
            headers=HEADERS,
            timeout=15,
        ).raise_for_status()
        healthd = start_healthd(tmp_path, settings)
        try:

            def probed() -> float:
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                except httpx.HTTPError:
                    return 0
                return value(text, "healthd_probes_total", result="success")

            asyncio.run(until(lambda: probed() >= 2, 15, "two successful probes counted"))
        finally:
            healthd.send_signal(signal.SIGTERM)
            assert healthd.wait(timeout=20) == 0
