"""The Python client installs and works without the server (#19 item 28)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from gateway.cli.demo_backend import create_demo_app
from tests.support import REPO, ThreadedServer, clean_environment

# Runs in the client's own virtualenv: none of the server's packages may be there,
# and a chat goes through the client to a real backend.
SCRIPT = """
import importlib.util, sys
from multiverse_gateway_client import Client
present = [name for name in ("starlette", "sqlalchemy", "uvicorn", "gateway", "shared")
           if importlib.util.find_spec(name) is not None]
assert not present, f"server packages installed with the client: {present}"
client = Client(endpoint=sys.argv[1])
print(client.chat([{"role": "user", "content": "hi"}], model="tiny").choices[0].message.content)
"""


def test_the_client_installs_alone_and_answers(tmp_path: Path) -> None:
    """`pip install ./clients/python` into a fresh virtualenv (openai and httpx come from
    the package index), then the client talks to a backend on 127.0.0.1."""
    source = shutil.copytree(REPO / "clients" / "python", tmp_path / "client")  # builds there
    venv = tmp_path / "venv"
    environment = clean_environment({})
    environment.pop("PYTHONPATH", None)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(source)],
        check=True,
        timeout=600,
        cwd=tmp_path,
        env=environment,
    )
    with ThreadedServer(create_demo_app("tiny", chunk_interval_ms=0)) as backend:
        result = subprocess.run(
            [python, "-c", SCRIPT, backend.url],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
