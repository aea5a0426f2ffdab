"""The README documents every setting and every CLI command (a test, so it stays true)."""

from __future__ import annotations

import click

from gateway.cli.admin import cli
from shared.settings import Settings
from tests.support import REPO

README = (REPO / "README.md").read_text()
ENV_EXAMPLE = (REPO / ".env.example").read_text()


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"| `{name.upper()}` |" in README, f"{name.upper()} missing from README"
        assert f"{name.upper()}=" in ENV_EXAMPLE, f"{name.upper()} missing from .env.example"


def _commands(group: click.Group, prefix: str) -> list[str]:
    found = []
    for name, command in group.commands.items():
        full = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += _commands(command, full)
        else:
            found.append(full)
    return found


def test_every_cli_command_is_documented() -> None:
    commands = _commands(cli, "gateway-admin")
    assert "gateway-admin db upgrade" in commands
    for command in commands:
        assert f"`{command}" in README, f"{command} missing from README"
