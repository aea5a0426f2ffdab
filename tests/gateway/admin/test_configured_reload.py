"""Servers from configuration belong to it (#19 item 27): the API will not deregister
them (they would come back at the next start), and SIGHUP re-reads BACKENDS_FILE."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import openai
import pytest

from gateway.cli.demo_backend import create_demo_app
from tests.healthd.test_daemon import until
from tests.support import ADMIN_KEY, GatewayProcess, ThreadedServer, process_settings, start_healthd

HEADERS = {"X-API-Key": ADMIN_KEY}


def routes(gateway: GatewayProcess, model: str) -> bool:
    """Whether a chat for `model` is answered (by a backend) through the gateway."""
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    except (openai.NotFoundError, openai.InternalServerError) as error:
        # 404: never served; 503: its servers left ("offline", within the last 24 hours)
        if isinstance(error, openai.InternalServerError) and error.status_code != 503:
            raise
        return False
    return True


def listed(gateway: GatewayProcess) -> list[str]:
    return sorted(entry["id"] for entry in httpx.get(f"{gateway.url}/v1/models").json()["data"])


def logged(tmp_path: Path, message: str) -> list[dict[str, object]]:
    path = tmp_path / "logs" / "gateway.log"
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [entry for entry in entries if entry.get("message") == message]


@pytest.mark.parametrize("workers", ["1", "2"])  # uvicorn in the process, or its supervisor
def test_configured_servers_are_the_files_to_remove_and_sighup_reloads_it(
    tmp_path: Path, database_url: str, workers: str
) -> None:
    backends_file = tmp_path / "backends.toml"
    with (
        ThreadedServer(create_demo_app("alpha", chunk_interval_ms=0)) as alpha,
        ThreadedServer(create_demo_app("beta", chunk_interval_ms=0)) as beta,
    ):
        backends_file.write_text(f'[[backend]]\nendpoint_url = "{alpha.url}"\n')
        settings = process_settings(
            tmp_path,
            database_url,
            BACKENDS_FILE=str(backends_file),
            HEALTH_CHECK_INTERVAL_SECONDS="1",
            WORKERS=workers,
        )
        with GatewayProcess(tmp_path, settings) as gateway:
            healthd = start_healthd(tmp_path, settings)
            try:
                asyncio.run(until(lambda: listed(gateway) == ["alpha"], 10, "alpha to route"))
                servers = httpx.get(f"{gateway.url}/admin/servers", headers=HEADERS).json()
                (alpha_id,) = [server["registration_id"] for server in servers]

                refused = httpx.delete(f"{gateway.url}/admin/register/{alpha_id}", headers=HEADERS)
                assert refused.status_code == 409, refused.text
                assert (
                    "comes from the configuration file; change or remove it there" in refused.text
                )
                assert routes(gateway, "alpha")

                # A mistake in the file: logged, the registrations stay, the gateway runs on.
                backends_file.write_text("[[backend]]\nweight = 'heavy'\n")
                assert gateway.process is not None
                gateway.process.send_signal(signal.SIGHUP)
                asyncio.run(
                    until(lambda: logged(tmp_path, "configuration not reloaded"), 10, "the log")
                )
                assert gateway.process.poll() is None and routes(gateway, "alpha")

                backends_file.write_text(f'[[backend]]\nendpoint_url = "{beta.url}"\n')
                gateway.process.send_signal(signal.SIGHUP)
                asyncio.run(until(lambda: listed(gateway) == ["beta"], 10, "beta to route"))
                assert routes(gateway, "beta") and not routes(gateway, "alpha")
                assert gateway.process.poll() is None
            finally:
                healthd.send_signal(signal.SIGTERM)
                assert healthd.wait(timeout=20) == 0
