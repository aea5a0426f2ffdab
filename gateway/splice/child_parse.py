"""A large JSON body parsed in a child Python process.

Python's JSON parser is C code that holds the interpreter lock for a whole
document: run in a worker thread, it still held up every other request of the
gateway worker for as long as it ran (the README has the figures). A child
process parses the body beside the worker instead, and sends back only the
members the proxy reads, or why the body is refused; the worker waits for it
in a thread (gateway/proxy/endpoint.py), which gives the lock up meanwhile.

The child is the same interpreter, isolated (`-I -S`: no site packages, no
environment variables read) and given an empty environment: it reads the body
on stdin, writes one JSON line, and exits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from gateway.json_bodies import refused_json

CHILD_TIMEOUT_SECONDS = 30.0  # a 10 MiB body takes well under a second

PROGRAM = """
import json, sys

def outcome(raw, names):
    if not raw.strip():
        return {"refused": "empty"}
    try:
        document = json.loads(raw)
    except ValueError as error:
        return {"refused": "invalid", "detail": str(error)}
    except RecursionError:
        return {"refused": "deep"}
    if not isinstance(document, dict):
        return {"refused": "not_object"}
    return {"members": {name: document[name] for name in names if name in document}}

sys.stdout.write(json.dumps(outcome(sys.stdin.buffer.read(), sys.argv[1:])))
"""


class ChildFailed(Exception):
    """No answer from the child (it could not start, timed out, or said nothing sensible):
    the caller parses the body itself."""


def members_in_child(
    body: bytes,
    names: Sequence[str],
    *,
    empty_hint: str = "send a JSON object",
    python: str = sys.executable,
) -> dict[str, Any]:
    """The members `names` of the JSON object `body` (those it has), parsed by a child
    process; the same 400 as `parse_json_object` for a body that is not one. Blocks:
    call it from a worker thread."""
    try:
        done = subprocess.run(
            [python, "-I", "-S", "-c", PROGRAM, *names],
            input=body,
            capture_output=True,
            timeout=CHILD_TIMEOUT_SECONDS,
            env={},
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise ChildFailed(f"the child did not run: {type(error).__name__}") from None
    if done.returncode != 0:
        raise ChildFailed(f"the child exited with status {done.returncode}")
    try:
        outcome = json.loads(done.stdout)
    except ValueError:
        raise ChildFailed("the child's answer is not JSON") from None
    members = outcome.get("members") if isinstance(outcome, dict) else None
    if isinstance(members, dict):
        return members
    if isinstance(outcome, dict) and isinstance(outcome.get("refused"), str):
        raise refused_json(
            outcome["refused"], str(outcome.get("detail", "")), empty_hint=empty_hint
        )
    raise ChildFailed("the child's answer has neither members nor a refusal")
