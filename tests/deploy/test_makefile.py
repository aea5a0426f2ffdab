"""What each make target installs (#19 item 25): `make run` only what running needs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO

PIP_INSTALL = re.compile(r"-m pip install (?:--quiet )?(.+)$")


def installs(target: str, venv: Path) -> list[str]:
    """What `make <target>` would pip-install into a new virtualenv (a dry run: `make -n`
    prints the commands of the real Makefile without running any)."""
    assert shutil.which("make"), "make is needed to run the project"
    result = subprocess.run(
        ["make", "-n", "-B", target, f"VENV={venv}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    lines = [
        match.group(1) for match in map(PIP_INSTALL.search, result.stdout.splitlines()) if match
    ]
    return [arguments for arguments in lines if arguments != "--upgrade pip"]


def test_make_run_installs_the_package_and_the_client_only(tmp_path: Path) -> None:
    """What running needs, and the openai SDK its printed "try it" snippet uses."""
    assert installs("run", tmp_path / "venv") == ["-e '.[client]'"]


@pytest.mark.parametrize("target", ["test", "check", "fmt"])
def test_the_other_targets_add_the_test_and_dev_extras(tmp_path: Path, target: str) -> None:
    assert "-e '.[test,dev]'" in installs(target, tmp_path / "venv")
