"""Another commit of the gateway, runnable beside this one, for bench/ab.py's build A.

    python -m bench.build_at REV    # prints the bin folder to pass as --a

A git worktree of REV, and a virtualenv that sees that worktree before this
venv's packages (a .pth file, not an editable install), and a `gateway` that
migrates its own database with REV's migrations and starts from a folder with
no `gateway` package in it. Each of these matters: this venv's editable
install (a meta-path finder) and Python's current-folder entry on sys.path
both win over PYTHONPATH, so running REV as `PYTHONPATH=worktree python -m
gateway.main` from the repository runs this checkout's code instead (the
figures of earlier A/B runs made that way compared a build with itself).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WRAPPER = """#!/bin/sh
# Build {rev}: its own code and migrations, started outside any checkout.
cd / || exit 3
db="${{DATABASE_URL#sqlite:///}}"
rm -f "$db" "$db-wal" "$db-shm"
{python} -c "from gateway.cli.admin import cli; cli()" db upgrade >/dev/null || exit 3
exec {python} -m gateway.main
"""


def build(rev: str, root: Path) -> Path:
    source, environment, bin_dir = root / "src", root / "venv", root / "bin"
    if not source.exists():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "-q", str(source), rev], check=True
        )
    if not environment.exists():
        venv.create(environment, with_pip=False)
        packages = next(environment.glob("lib/python*/site-packages"))
        here = sysconfig.get_paths()["purelib"]
        (packages / "build_at.pth").write_text(f"{source}\n{here}\n")
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "gateway"
    wrapper.write_text(WRAPPER.format(rev=rev, python=environment / "bin" / "python"))
    wrapper.chmod(0o755)
    check = subprocess.run(
        [str(environment / "bin" / "python"), "-c", "import gateway; print(gateway.__file__)"],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    if not check.stdout.startswith(str(source)):
        raise SystemExit(f"build {rev} imports {check.stdout.strip()}, not its own code")
    return bin_dir


def main() -> None:
    rev = sys.argv[1] if len(sys.argv) > 1 else "HEAD~1"
    short = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(build(rev, Path("/tmp") / f"gateway-build-{short}"))


if __name__ == "__main__":
    main()
