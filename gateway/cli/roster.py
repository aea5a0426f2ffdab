"""`gateway-admin keys import`: a class roster (CSV) read and checked whole before any key
is made, and the keys written to a file only its owner can read.

The roster has a header row naming its columns: `owner` and `name`, and optionally
`group` (in any order). Every problem is reported with its line number, and nothing
is created while one remains: half a class with keys is worse than none.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

COLUMNS = ("owner", "name", "group")
REQUIRED = ("owner", "name")
GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # as the admin API takes it
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LENGTH = 200


@dataclass(frozen=True)
class RosterRow:
    line: int
    owner: str
    name: str
    group: str | None


class RosterError(ValueError):
    """Every problem of a roster, one per line of the message."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def _text_problem(label: str, value: str) -> str | None:
    if not value:
        return f"{label} is empty"
    if len(value) > MAX_LENGTH:
        return f"{label} is longer than {MAX_LENGTH} characters"
    if CONTROL.search(value):
        return f"{label} contains a control character"
    return None


def _header(first: list[str]) -> tuple[dict[str, int], list[str]]:
    names = [cell.strip().lower() for cell in first]
    problems = []
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        problems.append(
            f"line 1: unknown column(s) {', '.join(repr(u) for u in unknown)}; the header "
            "names owner, name and optionally group"
        )
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        problems.append(f"line 1: the header has no {' or '.join(missing)} column")
    if len(set(names)) != len(names):
        problems.append("line 1: a column is named twice")
    return {name: index for index, name in enumerate(names)}, problems


def parse_roster(text: str, default_group: str | None = None) -> list[RosterRow]:
    """The rows of a roster, or RosterError naming every bad line. A row's own group
    wins over `default_group` (`--group`), which applies to rows without one."""
    lines = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    if not lines:
        raise RosterError(["the roster is empty: it needs a header row (owner,name[,group])"])
    columns, problems = _header(lines[0])
    if problems:
        raise RosterError(problems)
    rows: list[RosterRow] = []
    seen: dict[tuple[str, str], int] = {}
    for number, cells in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        if len(cells) != len(columns):
            problems.append(f"line {number}: {len(cells)} cells, the header has {len(columns)}")
            continue
        owner, name = (cells[columns[c]].strip() for c in REQUIRED)
        group = cells[columns["group"]].strip() if "group" in columns else ""
        group = group or default_group or ""
        for label, value in (("owner", owner), ("name", name)):
            if (problem := _text_problem(label, value)) is not None:
                problems.append(f"line {number}: {problem}")
        if group and not GROUP.match(group):
            problems.append(f"line {number}: group {group!r} is not a valid group name")
        if (owner, name) in seen:
            problems.append(
                f"line {number}: duplicate of line {seen[(owner, name)]} "
                f"(owner {owner!r}, name {name!r})"
            )
        seen.setdefault((owner, name), number)
        rows.append(RosterRow(number, owner, name, group or None))
    if problems:
        raise RosterError(problems)
    if not rows:
        raise RosterError(["the roster has a header but no rows"])
    return rows


@contextmanager
def secret_file(path: Path) -> Iterator[TextIO]:
    """A new file of mode 600, created with O_EXCL: never an existing one (FileExistsError),
    never readable by others even for a moment. Removed again when the block fails, so a
    failed import leaves no empty keys file behind."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(descriptor, 0o600)  # whatever the umask
    try:
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_keys(handle: TextIO, keys: Sequence[dict[str, object]]) -> None:
    """owner,name,group,key: one row per key, with a header row."""
    writer = csv.writer(handle, lineterminator="\n")  # (not CRLF: keys get cut from it)
    writer.writerow(("owner", "name", "group", "key"))
    for key in keys:
        writer.writerow((key["owner"], key["name"], key["group"] or "", key["key"]))
