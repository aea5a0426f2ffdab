"""`gateway-admin keys …` and `groups …`: client keys and their groups, over the admin API.

A key is printed once, by `keys create` (or written by `keys import` to a file of
mode 600); every other command shows its prefix only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from gateway.admission.limits import LIMIT_NAMES
from gateway.cli.api_client import (
    KEYS,
    AdminClient,
    F,
    api_options,
    error_message,
    fail,
    print_document,
)
from gateway.cli.roster import RosterError, parse_roster, secret_file, write_keys
from gateway.cli.stats_view import (
    created_text,
    group_details,
    groups_table,
    key_details,
    keys_table,
)

DEFAULT = "default"


class LimitValue(click.ParamType[Any, Any]):
    """A whole number from 0 (no limit), or `default` (back to the group's or default)."""

    name = "N|default"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, int) or value == DEFAULT:
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is not a whole number (or 'default')", param, ctx)


def limit_options(clearable: bool) -> Callable[[F], F]:
    """--requests-per-minute … --priority, one per limit the gateway knows."""

    def decorate(command: F) -> F:
        for name in reversed(LIMIT_NAMES):
            flag = "--" + name.replace("_", "-")
            extra = "; 'default' removes it" if clearable else ""
            command = click.option(
                flag,
                name,
                type=LimitValue(),
                help=f"0 = no limit{extra}."
                if name != "priority"
                else f"1 to 100: share of a full pool{extra}.",
            )(command)
        return command

    return decorate


def limits_of(fields: dict[str, Any]) -> dict[str, int | None]:
    """The limit options given: `default` becomes null (removed)."""
    return {
        name: (None if fields[name] == DEFAULT else fields[name])
        for name in LIMIT_NAMES
        if fields.get(name) is not None
    }


def _new_key_fields(fields: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    limits = limits_of(fields)
    if any(value is None for value in limits.values()):
        fail("'default' only makes sense in `keys update`: leave the option out instead")
    if limits:
        body["limits"] = limits
    if fields.get("models"):
        body["models"] = list(fields["models"])
    if fields.get("expires"):
        body["expires_at"] = fields["expires"]
    return body


def key_options(command: F) -> F:
    command = click.option(
        "--expires", help="Refused after this time (ISO 8601, e.g. 2027-02-01; UTC)."
    )(command)
    command = click.option(
        "--model", "models", multiple=True, help="A model it may use (repeat; default: all)."
    )(command)
    return limit_options(clearable=False)(command)


@click.group()
def keys() -> None:
    """Client keys: issue, list, show, update, revoke, import a class roster."""


@keys.command("create")
@click.option("--owner", required=True, help="Who the key is for (a student_id).")
@click.option("--name", required=True, help="What it is for, e.g. laptop.")
@click.option("--group", help="An existing group (see `groups set`).")
@key_options
@api_options
def create(
    owner: str,
    name: str,
    group: str | None,
    url: str,
    api_key: str | None,
    as_json: bool,
    **fields: Any,
) -> None:
    """Issue a key; it is printed this once."""
    body = {"owner": owner, "name": name, **_new_key_fields(fields)}
    if group:
        body["group"] = group
    result = AdminClient(url, api_key).call("POST", "/admin/keys", json=body)
    print_document(result, as_json, created_text)


@keys.command("list")
@click.option("--owner", help="Only this owner's keys.")
@click.option("--group", help="Only this group's keys.")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@api_options
def list_keys(
    owner: str | None,
    group: str | None,
    include_revoked: bool,
    url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """List keys (prefixes only) with their use today."""
    params = {k: v for k, v in (("owner", owner), ("group", group)) if v}
    if include_revoked:
        params["include_revoked"] = "true"
    result = AdminClient(url, api_key).call("GET", "/admin/keys", params=params)
    print_document(result, as_json, keys_table)


@keys.command("show")
@click.argument("key_id")
@api_options
def show(key_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Show one key: limits (own and effective), models, use today."""
    client = AdminClient(url, api_key)
    key_id = client.resolve(key_id, KEYS)
    result = client.call("GET", f"/admin/keys/{key_id}")
    print_document(result, as_json, key_details)


@keys.command("update")
@click.argument("key_id")
@click.option("--name")
@click.option("--group", help="Move it to this group.")
@click.option("--no-group", is_flag=True, help="Take it out of its group.")
@click.option("--model", "models", multiple=True, help="The models it may use (repeat).")
@click.option("--all-models", is_flag=True, help="Clear its own list of models.")
@click.option("--expires", help="New expiry (ISO 8601; UTC).")
@click.option("--no-expiry", is_flag=True, help="Never expires.")
@limit_options(clearable=True)
@api_options
def update(key_id: str, url: str, api_key: str | None, as_json: bool, **fields: Any) -> None:
    """Change a key's name, group, limits, models or expiry (only the options given)."""
    body: dict[str, Any] = {}
    for given, cleared, field in (
        ("group", "no_group", "group"),
        ("models", "all_models", "models"),
        ("expires", "no_expiry", "expires_at"),
    ):
        if fields[given] and fields[cleared]:
            fail(f"--{given} and --{cleared.replace('_', '-')} contradict each other: give one")
        if fields[given]:
            body[field] = list(fields[given]) if field == "models" else fields[given]
        elif fields[cleared]:
            body[field] = None
    if fields["name"]:
        body["name"] = fields["name"]
    if limits := limits_of(fields):
        body["limits"] = limits
    if not body:
        fail("nothing to change: give at least one option (see --help)")
    client = AdminClient(url, api_key)
    key_id = client.resolve(key_id, KEYS)
    result = client.call("PATCH", f"/admin/keys/{key_id}", json=body)
    print_document(result, as_json, key_details)


@keys.command("revoke")
@click.argument("key_id")
@api_options
def revoke(key_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Revoke a key at once (final; its usage history stays)."""
    client = AdminClient(url, api_key)
    key_id = client.resolve(key_id, KEYS)
    result = client.call("DELETE", f"/admin/keys/{key_id}")
    print_document(result, as_json, lambda k: f"revoked {k['id']} ({k['prefix']}…) of {k['owner']}")


@keys.command("import")
@click.argument("roster", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the keys go (a new file, mode 600) [default: ROSTER's name + .keys.csv].",
)
@click.option("--group", help="The group of rows that name none.")
@click.option("--print-keys", is_flag=True, help="Also print the keys on the terminal.")
@key_options
@api_options
def import_roster(
    roster: Path,
    out: Path | None,
    group: str | None,
    print_keys: bool,
    url: str,
    api_key: str | None,
    as_json: bool,
    **fields: Any,
) -> None:
    """Issue a key per row of a CSV roster (owner,name[,group]); all or none.

    The keys go to a new file of mode 600 (owner,name,group,key), never to the
    terminal unless --print-keys."""
    try:
        rows = parse_roster(roster.read_text(encoding="utf-8-sig"), group)
    except (RosterError, UnicodeDecodeError) as error:
        fail(f"{roster}: nothing was created:\n{error}")
        return
    common = _new_key_fields(fields)
    body = {
        "keys": [
            {"owner": r.owner, "name": r.name, **({"group": r.group} if r.group else {}), **common}
            for r in rows
        ]
    }
    target = out or roster.with_name(roster.name.removesuffix(".csv") + ".keys.csv")
    client = AdminClient(url, api_key)
    try:
        with secret_file(target) as handle:
            response = client.send("POST", "/admin/keys/batch", json=body)
            if response.status_code != 201:
                fail(f"{roster}: nothing was created: {_row_error(response, rows)}")
            created = response.json()["keys"]
            write_keys(handle, created)
    except FileExistsError:
        fail(f"{target} exists: keys are never written over a file; give another --out")
        return
    click.echo(f"issued {len(created)} keys; written to {target} (mode 600)", err=print_keys)
    if print_keys:
        write_keys(sys.stdout, created)
    elif as_json:
        click.echo(keys_json(created))


def keys_json(created: Sequence[dict[str, Any]]) -> str:
    import json

    return json.dumps([{k: v for k, v in key.items() if k != "key"} for key in created], indent=2)


def _row_error(response: Any, rows: Sequence[Any]) -> str:
    """The API's refusal, its `keys[i]` turned into the roster's line number."""
    message = error_message(response)
    body = response.json() if response.headers.get("content-type") == "application/json" else {}
    param = (body.get("error") or {}).get("param") or ""
    if param.startswith("keys[") and "]" in param:
        index = int(param[5 : param.index("]")])
        if 0 <= index < len(rows):
            message = f"line {rows[index].line}: {message}"
    return f"{message} (HTTP {response.status_code})"


# --- groups -------------------------------------------------------------


@click.group()
def groups() -> None:
    """Groups of keys (a class): default limits and the models its keys may use."""


@groups.command("set")
@click.argument("name")
@click.option(
    "--model",
    "models",
    multiple=True,
    help="A model its keys may use (repeat; default: every model).",
)
@limit_options(clearable=False)
@api_options
def set_group(
    name: str, models: Sequence[str], url: str, api_key: str | None, as_json: bool, **fields: Any
) -> None:
    """Create a group, or replace its limits and models."""
    body: dict[str, Any] = {"limits": limits_of(fields), "models": list(models) or None}
    result = AdminClient(url, api_key).call("PUT", f"/admin/groups/{name}", json=body)
    print_document(result, as_json, group_details)


@groups.command("list")
@api_options
def list_groups(url: str, api_key: str | None, as_json: bool) -> None:
    """List groups with their key counts, limits and models."""
    print_document(AdminClient(url, api_key).call("GET", "/admin/groups"), as_json, groups_table)


@groups.command("show")
@click.argument("name")
@api_options
def show_group(name: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Show one group."""
    result = AdminClient(url, api_key).call("GET", f"/admin/groups/{name}")
    print_document(result, as_json, group_details)


@groups.command("delete")
@click.argument("name")
@api_options
def delete_group(name: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Delete a group (refused while keys that are not revoked are in it)."""
    result = AdminClient(url, api_key).call("DELETE", f"/admin/groups/{name}")
    print_document(result, as_json, lambda g: f"deleted group {g['name']}")
