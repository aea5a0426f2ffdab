"""The roster of `keys import`, read and checked whole (a table), and the keys file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.cli.roster import RosterError, RosterRow, parse_roster, secret_file


@pytest.mark.parametrize(
    ("text", "group", "rows"),
    [
        ("owner,name\nalice,laptop\n", None, [RosterRow(2, "alice", "laptop", None)]),
        ("\ufeffname,owner\n lap , alice \n\n", "cs", [RosterRow(2, "alice", "lap", "cs")]),
        ("owner,name,group\na,b,\nc,d,g2\n", "g1",
         [RosterRow(2, "a", "b", "g1"), RosterRow(3, "c", "d", "g2")]),
        ('OWNER,Name\n"smith, j",x\n', None, [RosterRow(2, "smith, j", "x", None)]),
    ],
)  # fmt: skip
def test_good_rosters(text: str, group: str | None, rows: list[RosterRow]) -> None:
    assert parse_roster(text, group) == rows


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("", ["the roster is empty: it needs a header row (owner,name[,group])"]),
        ("owner,name\n", ["the roster has a header but no rows"]),
        ("owner\nalice\n", ["line 1: the header has no name column"]),
        ("owner,name,email\n", ["line 1: unknown column(s) 'email'; the header names owner, "
                                "name and optionally group"]),
        ("owner,name\n,x\na,\n", ["line 2: owner is empty", "line 3: name is empty"]),
        ("owner,name\na,x\nb,y\na,x\n", ["line 4: duplicate of line 2 (owner 'a', name 'x')"]),
        ("owner,name\na,x,extra\n", ["line 2: 3 cells, the header has 2"]),
        ("owner,name,group\na,x,no such\n", ["line 2: group 'no such' is not a valid group name"]),
        ("owner,name\na\x07,x\n", ["line 2: owner contains a control character"]),
    ],
)  # fmt: skip
def test_bad_rosters_name_every_line(text: str, problems: list[str]) -> None:
    with pytest.raises(RosterError) as raised:
        parse_roster(text)
    assert raised.value.problems == problems


def test_the_keys_file_is_new_private_and_removed_when_the_import_fails(tmp_path: Path) -> None:
    path = tmp_path / "keys.csv"
    old = os.umask(0)
    try:
        with secret_file(path) as handle:
            handle.write("owner,name,group,key\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError), secret_file(path):
        pass
    assert path.read_text() == "owner,name,group,key\n"  # not written over
    other = tmp_path / "other.csv"
    with pytest.raises(RuntimeError), secret_file(other):
        raise RuntimeError("the admin API refused")
    assert not other.exists()
