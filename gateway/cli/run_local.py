"""`gateway-admin run-local` (what `make run` starts): the whole system on one machine.

It writes a `.env` with a random admin key when there is none, migrates the
database, starts gateway, healthd and a demo backend as child processes,
registers the demo backend as model `demo`, prints how to use it, and stops
everything cleanly on Ctrl-C (or when any child dies).
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import click
import httpx
from dotenv import dotenv_values, set_key

from shared.db import upgrade_to_head
from shared.settings import Settings, SettingsError, load_settings

BIN = Path(sys.executable).parent
STOP_GRACE_SECONDS = 15

ENV_TEMPLATE = """\
# Written by `make run` for local development. See .env.example for every setting.
ADMIN_API_KEY={key}
HOST=127.0.0.1
PORT={port}
# The demo backend's port (DEMO_PORT in the environment wins, as PORT's does).
DEMO_PORT={demo_port}
DATABASE_URL=sqlite:///./multiverse.db
LOG_DIR=./logs
# The demo backend listens on 127.0.0.1; a public deployment leaves this false.
ALLOW_PRIVATE_BACKENDS=true
HEALTH_CHECK_INTERVAL_SECONDS=10
"""


DEFAULT_DEMO_PORT = 9001


def ensure_env_file(
    path: Path, port: str | None = None, demo_port: int | None = None
) -> str | None:
    """Create `.env` with a random admin key if missing; return the new key, if any.
    `port`: PORT as this first run was given it (the environment), so that
    gateway-admin, which reads `.env`, calls this gateway and not another one on 8000;
    `demo_port` likewise, so that the next `make run` starts the demo where this one's
    was registered (not a second registration, on 9001, beside a dead one)."""
    if path.exists():
        return None
    key = secrets.token_urlsafe(24)
    chosen = port if port is not None and port.isdigit() else "8000"
    demo = demo_port if demo_port is not None else DEFAULT_DEMO_PORT
    path.write_text(ENV_TEMPLATE.format(key=key, port=chosen, demo_port=demo))
    path.chmod(0o600)
    return key


def demo_port_in(path: Path) -> int | None:
    """DEMO_PORT as `.env` says it, if it says a port (ASCII digits, 1 to 65535)."""
    value = dotenv_values(path).get("DEMO_PORT") if path.exists() else None
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value) if 0 < int(value) < 65536 else None


def remember_demo_port(path: Path, demo_port: int) -> None:
    """A port given (DEMO_PORT, --demo-port) is kept in `.env`, where the next run finds
    it: so a later plain `make run` starts the demo where its registration points."""
    if path.exists() and demo_port_in(path) != demo_port:
        try:
            set_key(path, "DEMO_PORT", str(demo_port), quote_mode="never", follow_symlinks=True)
        except OSError as error:  # (not kept: this run goes on all the same)
            click.echo(f"could not keep DEMO_PORT in {path}: {error.strerror}", err=True)


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on host:port already (a bind would fail)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def check_ports_free(settings: Settings, demo_port: int) -> None:
    """Refuse to start when the ports are taken, before anything starts: a second
    `make run` would otherwise find the first one's gateway answering, print its
    banner as if it were its own, and then fail when its own gateway could not bind."""
    for name, host, port, how in (
        ("the gateway", settings.host, settings.port, "set PORT in .env"),
        ("the demo backend", "127.0.0.1", demo_port, "run `gateway-admin run-local --demo-port N`"),
    ):
        if port_taken(host, port):
            raise click.ClickException(
                f"port {port} ({name}) is in use: is `make run` or a gateway already running? "
                f"Stop it, or {how} to use another port"
            )


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


def _start(name: str, command: list[str]) -> Child:
    # A session of its own: Ctrl-C reaches only us, and we stop children in order.
    return Child(name, subprocess.Popen(command, start_new_session=True))


def _wait_until(check: str, url: str, children: list[Child], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if child.process.poll() is not None:
                raise click.ClickException(f"{child.name} exited while starting")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"{check} did not answer within {timeout:.0f}s")


def stop_children(children: list[Child]) -> None:
    """SIGTERM everyone, wait for a graceful exit, then SIGKILL what is left."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def _register_demo(settings: Settings, gateway_url: str, demo_url: str) -> str:
    response = httpx.post(
        f"{gateway_url}/admin/register",
        json={
            "model_name": "demo",
            "endpoint_url": demo_url,
            "metadata": {"student_id": "demo", "description": "demo backend started by make run"},
        },
        headers={"X-API-Key": settings.admin_api_key.get_secret_value()},
        timeout=30,
        trust_env=False,
    )
    if response.status_code == 201:
        return f"registered as {response.json()['registration_id']}"
    if response.status_code == 409:
        return "already registered"
    raise click.ClickException(
        f"registering the demo backend failed: {response.json()['error']['message']}"
    )


def banner(gateway_url: str, new_key: str | None) -> str:
    key_line = (
        f"  Admin key:  {new_key}   (new; saved in .env)"
        if new_key
        else "  Admin key:  ADMIN_API_KEY in .env"
    )
    return f"""
Multiverse Inference Gateway is running.
  Gateway:    {gateway_url}
  Dashboard:  {gateway_url}/   (paste the admin key when it asks)
  API docs:   {gateway_url}/docs
{key_line}
  Model:      demo (a demo backend; register your own with gateway-admin register)

Try it:
  curl {gateway_url}/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "demo", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  .venv/bin/python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{gateway_url}/v1", api_key="none")
reply = client.chat.completions.create(
    model="demo", messages=[{{"role": "user", "content": "Hi"}}])
print(reply.choices[0].message.content)
PY

  .venv/bin/gateway-admin servers

Press Ctrl-C to stop everything.
"""


def run_local(demo_port: int | None) -> None:
    """`demo_port`: as given (DEMO_PORT or --demo-port); None: `.env`'s, else 9001."""
    env_file = Path(".env")
    new_key = ensure_env_file(env_file, os.environ.get("PORT"), demo_port)
    if demo_port is None:
        demo_port = demo_port_in(env_file) or DEFAULT_DEMO_PORT
    else:
        remember_demo_port(env_file, demo_port)
    try:
        settings = load_settings()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    check_ports_free(settings, demo_port)
    upgrade_to_head(settings.database_url)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    gateway_url = f"http://{host}:{settings.port}"
    demo_url = f"http://127.0.0.1:{demo_port}"

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    children = [
        _start(
            "demo backend", [str(BIN / "gateway-admin"), "demo-backend", "--port", str(demo_port)]
        ),
        _start("gateway", [str(BIN / "gateway")]),
        _start("healthd", [str(BIN / "healthd")]),
    ]
    try:
        _wait_until("the demo backend", f"{demo_url}/v1/models", children)
        _wait_until("the gateway", f"{gateway_url}/health", children)
        click.echo(f"demo backend {_register_demo(settings, gateway_url, demo_url)}")
        click.echo(banner(gateway_url, new_key))
        while not stopping.wait(0.5):
            for child in children:
                if child.process.poll() is not None:
                    raise click.ClickException(
                        f"{child.name} exited with code {child.process.returncode}"
                    )
    finally:
        click.echo("stopping gateway, healthd and the demo backend ...")
        stop_children(children)
        click.echo("stopped.")
