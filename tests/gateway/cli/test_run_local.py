"""`gateway-admin run-local`, which `make run` starts: the newcomer's first five minutes."""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
import threading
from pathlib import Path

import httpx
import openai
import pytest
from dotenv import dotenv_values

from gateway.cli.run_local import demo_port_in
from tests.support import BIN, clean_environment, free_port, wait_for


def test_run_local_starts_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    gateway_port, demo_port = free_port(), free_port()
    process = subprocess.Popen(
        [str(BIN / "gateway-admin"), "run-local", "--demo-port", str(demo_port)],
        cwd=tmp_path,
        env=clean_environment({"PORT": str(gateway_port)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        wait_for(lambda: "Press Ctrl-C" in "".join(output), timeout=90, what="the banner")
        text = "".join(output)
        key = dotenv_values(tmp_path / ".env")["ADMIN_API_KEY"]
        assert key and f"Admin key:  {key}" in text
        # The port it was given, kept for gateway-admin (which reads .env), not 8000.
        assert dotenv_values(tmp_path / ".env")["PORT"] == str(gateway_port)
        assert dotenv_values(tmp_path / ".env")["DEMO_PORT"] == str(demo_port)
        assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
        assert (tmp_path / "multiverse.db").exists()

        gateway = f"http://127.0.0.1:{gateway_port}"
        servers = httpx.get(f"{gateway}/admin/servers", headers={"X-API-Key": key}).json()
        assert [(s["model_name"], s["health_status"]) for s in servers] == [("demo", "healthy")]
        assert (tmp_path / "logs" / "gateway.log").exists()
        assert (tmp_path / "logs" / "healthd.log").exists()
        # The demo backend really serves the model (through the gateway once the proxy lands).
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{demo_port}/v1", api_key="x")
        assert (
            client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "hi"}]
            )
            .choices[0]
            .message.content
        )
    finally:
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=30)
    assert returncode == 0
    reader.join(timeout=5)
    assert "stopped." in "".join(output)
    for port in (gateway_port, demo_port):
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            raise AssertionError(f"port {port} still answers after Ctrl-C")
        except httpx.ConnectError:
            pass


def test_a_second_run_while_the_ports_are_taken_says_so_and_starts_nothing(
    tmp_path: Path,
) -> None:
    gateway_port, demo_port = free_port(), free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", gateway_port))
        taken.listen()
        second = subprocess.run(
            [str(BIN / "gateway-admin"), "run-local", "--demo-port", str(demo_port)],
            cwd=tmp_path,
            env=clean_environment({"PORT": str(gateway_port)}),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert second.returncode == 1
    assert f"port {gateway_port} (the gateway) is in use" in second.stderr
    assert "is running" not in second.stdout  # no banner of somebody else's gateway
    assert not (tmp_path / "logs").exists()  # nothing was started


def _run_with_demo_port_taken(cwd: Path, taken_port: int, **env: str) -> str:
    """run-local's stderr, run while `taken_port` is listened on (so it starts nothing)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", taken_port))
        taken.listen()
        refused = subprocess.run(
            [str(BIN / "gateway-admin"), "run-local"],
            cwd=cwd,
            env=clean_environment(env),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert refused.returncode == 1
    return refused.stderr


def test_the_demo_port_can_come_from_the_environment(tmp_path: Path) -> None:
    # `PORT=18000 DEMO_PORT=18001 make run`: make passes both on to run-local.
    gateway_port, demo_port = str(free_port()), free_port()
    refused = _run_with_demo_port_taken(
        tmp_path, demo_port, PORT=gateway_port, DEMO_PORT=str(demo_port)
    )
    assert f"port {demo_port} (the demo backend) is in use" in refused
    # Kept in .env, as PORT is: the next run without DEMO_PORT starts the demo where
    # this one's was registered (from a trial: it started on 9001, the old one's
    # registration left unhealthy beside it).
    assert dotenv_values(tmp_path / ".env")["DEMO_PORT"] == str(demo_port)
    again = _run_with_demo_port_taken(tmp_path, demo_port, PORT=gateway_port)
    assert f"port {demo_port} (the demo backend) is in use" in again
    # A port given later is kept too (from a review: only a first run's was).
    other = free_port()
    moved = _run_with_demo_port_taken(tmp_path, other, PORT=gateway_port, DEMO_PORT=str(other))
    assert f"port {other} (the demo backend) is in use" in moved
    assert dotenv_values(tmp_path / ".env")["DEMO_PORT"] == str(other)
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("line", "port"),
    [
        ("DEMO_PORT=18001", 18001),
        ("DEMO_PORT=0", None),
        ("DEMO_PORT=²", None),
        ("DEMO_PORT=१२३४", None),
        ("DEMO_PORT=70000", None),
        ("DEMO_PORT=", None),
        ("", None),
    ],
)
def test_the_demo_port_in_env_is_a_port_or_none(
    tmp_path: Path, line: str, port: int | None
) -> None:
    (tmp_path / ".env").write_text(line + "\n", encoding="utf-8")
    assert demo_port_in(tmp_path / ".env") == port
