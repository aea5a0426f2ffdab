"""psycopg and redis are the `cluster` extra: without them a SQLite install runs."""

from __future__ import annotations

import subprocess
import sys

from tests.support import clean_environment

WITHOUT = "import sys; sys.modules['psycopg'] = None; sys.modules['redis'] = None; "


def test_the_processes_import_without_psycopg_and_redis() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT + "import gateway.main, healthd.main, gateway.cli.admin"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_postgresql_without_its_driver_is_one_line_naming_the_fix() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT + "from healthd.main import main; main()"],
        env=clean_environment({"DATABASE_URL": "postgresql://gw:pw-secret@127.0.0.1:1/gw"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "healthd: DATABASE_URL names PostgreSQL, whose driver (psycopg) is not installed: "
        "pip install 'multiverse-gateway[cluster]'"
    ]
