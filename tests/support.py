"""Helpers for tests: real servers on ephemeral loopback ports, waiting on conditions."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from starlette.types import ASGIApp

ADMIN_KEY = "test-admin-key-0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last_error = error
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or condition}: {last_error}"
    )


class ThreadedServer:
    """A real uvicorn server on 127.0.0.1:<ephemeral port>, in a thread of the test process."""

    def __init__(self, app: ASGIApp, *, lifespan: str = "on", port: int = 0) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan=lifespan,
            access_log=False,
            # Fake backends that hang or stream forever must not hold up the test.
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=15, what="uvicorn to start")
        self.port: int = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def free_port() -> int:
    """A port that was free a moment ago (for processes that cannot take port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without any gateway setting, plus `extra`."""
    from shared.settings import Settings

    names = {name.upper() for name in Settings.model_fields} | {"GATEWAY_URL"}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in names}
    environment.update(extra)
    return environment


def process_settings(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    """The settings of a gateway or healthd that a test runs as a real process."""
    return {
        "DATABASE_URL": database_url,
        "ADMIN_API_KEY": ADMIN_KEY,
        "ALLOW_PRIVATE_BACKENDS": "true",
        "LOG_DIR": str(tmp_path / "logs"),
        **extra,
    }


def start_healthd(workdir: Path, settings: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """`healthd` as a real process (its output discarded: its log file has it)."""
    return subprocess.Popen(
        [str(BIN / "healthd")],
        cwd=workdir,
        env=clean_environment(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class GatewayProcess:
    """`gateway` as a real process, in its own folder, on a free loopback port."""

    def __init__(self, workdir: Path, settings: Mapping[str, str]) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.environment = clean_environment(
            {**settings, "HOST": "127.0.0.1", "PORT": str(self.port)}
        )
        self.log_path = workdir / "gateway.stderr"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GatewayProcess:
        self.log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(BIN / "gateway")],
            cwd=self.workdir,
            env=self.environment,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._healthy, timeout=30, what="the gateway process to answer /health")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"gateway exited: {self.log_path.read_text()}")
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def __exit__(self, *exc_info: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.log_file.close()


@contextmanager
def serving(app: ASGIApp, **kwargs: Any) -> Iterator[ThreadedServer]:
    with ThreadedServer(app, **kwargs) as server:
        yield server
