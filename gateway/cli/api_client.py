"""What the `gateway-admin` commands share: where the gateway is, its admin API over
HTTP, and printing for people or scripts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import click
import httpx
from dotenv import dotenv_values

F = TypeVar("F", bound=Callable[..., Any])


def _dotenv() -> dict[str, str | None]:
    return dotenv_values(".env") if os.path.exists(".env") else {}


def default_gateway_url() -> str:
    """GATEWAY_URL, else the HOST and PORT this machine's gateway listens on."""
    if url := os.environ.get("GATEWAY_URL"):
        return url
    values = {**_dotenv(), **os.environ}
    host = values.get("HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{values.get('PORT') or 8000}"


def default_api_key() -> str | None:
    return os.environ.get("ADMIN_API_KEY") or _dotenv().get("ADMIN_API_KEY") or None


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns, for people (use --json in scripts)."""
    cells = [[("-" if value is None else str(value)) for value in row] for row in rows]
    widths = [
        max([len(header)] + [len(row[index]) for row in cells])
        for index, header in enumerate(headers)
    ]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class AdminClient:
    """The admin API over HTTP; errors become one line on stderr and exit 1."""

    def __init__(self, url: str, api_key: str | None) -> None:
        context = click.get_current_context(silent=True)
        token = context.meta.get(MANAGEMENT_TOKEN) if context is not None else None
        if not api_key and not token:
            fail("no admin key: pass --api-key, or set ADMIN_API_KEY (environment or .env)")
        self.base = url.rstrip("/")
        # A management token manages its own registration, without the admin key.
        headers = {"X-Management-Token": token} if token else {"X-API-Key": api_key or ""}
        self.client = httpx.Client(headers=headers, timeout=60, trust_env=False)

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer, whatever its status (unreachable: one line and exit 1)."""
        try:
            return self.client.request(method, f"{self.base}{path}", **kwargs)
        except httpx.HTTPError as error:
            fail(f"cannot reach the gateway at {self.base}: {error}")
            raise AssertionError from error  # unreachable: _fail exits

    def resolve(self, given: str, listing: Listing) -> str:
        """A full id from the start of one (the short ids `stats` and tables show): the
        one entry of GET `listing` whose `field` starts with `given`. A full id (36
        characters) is taken as it is; none or several matching is one line and exit 1
        (an ambiguous start never picks one: these commands drain, revoke, delete)."""
        if len(given) >= FULL_ID_LENGTH:
            return given
        path, params, field, what = listing
        given = given.lower()  # (ids are lowercase UUIDs)
        if len(given) < MIN_ID_START:
            fail(f"{what} id {given!r} is too short: give at least {MIN_ID_START} characters")
        found = sorted(
            {str(e[field]) for e in self._every(path, params) if str(e[field]).startswith(given)}
        )
        if len(found) == 1:
            return found[0]
        if not found:
            fail(f"no {what} id starts with {given!r}")
        fail(f"{len(found)} {what} ids start with {given!r} ({', '.join(found[:5])}): give more")
        raise AssertionError  # unreachable: fail exits

    def _every(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every entry of a listing, page after page where it has pages (a match on the
        first page alone is no proof that no other entry matches)."""
        if not params.get("limit"):
            return list(self.call("GET", path, params=params) or [])
        entries: list[dict[str, Any]] = []
        page = int(params["limit"])
        while True:
            batch = self.call("GET", path, params={**params, "offset": str(len(entries))})
            entries.extend(batch or [])
            if len(batch or []) < page:
                return entries

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.send(method, path, **kwargs)
        body = json_of(response)
        if response.status_code >= 400:
            fail(f"{error_message(response)} (HTTP {response.status_code})")
        return body


def json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def error_message(response: httpx.Response) -> str:
    """The message of an error answer (OpenAI shape), else the start of its text."""
    body = json_of(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"]["message"])
    return response.text[:200]


MANAGEMENT_TOKEN = "management_token"
FULL_ID_LENGTH = 36  # a UUID's text
MIN_ID_START = 4


class Listing(NamedTuple):
    """Where `resolve` finds the ids of a kind of thing."""

    path: str
    params: dict[str, str]
    field: str
    what: str


SERVERS = Listing("/admin/servers", {"include_inactive": "true"}, "registration_id", "server")
KEYS = Listing("/admin/keys", {"include_revoked": "true", "limit": "1000"}, "id", "key")


def _keep_token(context: click.Context, _: click.Parameter, value: str | None) -> None:
    if value:
        context.meta[MANAGEMENT_TOKEN] = value


def api_options(command: F) -> F:
    """--url, --api-key, --management-token and --json, shared by every command that
    calls the admin API."""
    command = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(
        command
    )
    command = click.option(
        "--management-token",
        envvar="GATEWAY_MANAGEMENT_TOKEN",
        expose_value=False,
        callback=_keep_token,
        help="Manage your own registration with its token instead of the admin key "
        "(or GATEWAY_MANAGEMENT_TOKEN).",
    )(command)
    command = click.option(
        "--api-key",
        default=default_api_key,
        show_default="ADMIN_API_KEY from the environment or .env",
        help="The gateway's admin key.",
    )(command)
    command = click.option(
        "--url",
        default=default_gateway_url,
        show_default="GATEWAY_URL, or http://HOST:PORT from .env",
        help="The gateway's base URL.",
    )(command)
    return command


def print_document(document: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    click.echo(json.dumps(document, indent=2) if as_json else human(document))
