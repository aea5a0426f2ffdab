"""gateway-admin's ids by their start: every page of a listing is read before one is
taken as the only match (an ambiguous start is refused, never guessed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.cli.api_client import KEYS, AdminClient
from tests.support import ThreadedServer

# 2,500 keys, served 1,000 to a page as the admin API does; two start with "abcd":
# the 7th and the 2,400th.
IDS = [str(uuid.UUID(int=index + 1)).replace("0000", "1111", 1) for index in range(2500)]
IDS[6] = "abcd" + IDS[6][4:]
IDS[2399] = "abcd" + "e" + IDS[2399][5:]
IDS[1500] = "fedc" + IDS[1500][4:]


@pytest.fixture
def listing() -> Iterator[ThreadedServer]:
    async def keys(request: Request) -> JSONResponse:
        limit = int(request.query_params.get("limit", "1000"))
        offset = int(request.query_params.get("offset", "0"))
        return JSONResponse([{"id": key} for key in IDS[offset : offset + limit]])

    with ThreadedServer(Starlette(routes=[Route("/admin/keys", keys)])) as server:
        yield server


def test_a_start_matched_on_a_later_page_too_is_refused(
    listing: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    client = AdminClient(listing.url, "admin-key")
    with pytest.raises(SystemExit):
        client.resolve("abcd", KEYS)
    assert "2 key ids start with 'abcd'" in capsys.readouterr().err
    assert client.resolve("ABCDE", KEYS) == IDS[2399]  # on the third page; any case
    assert client.resolve("fedc", KEYS) == IDS[1500]  # on the second page


def test_stats_takes_the_start_of_a_key_id() -> None:
    """`stats --by key --key START`: the start `stats` prints is resolved to the key's
    full id before the statistics are asked for (from a new user's trial)."""
    from click.testing import CliRunner

    from gateway.cli.admin import cli

    asked: list[str | None] = []

    ids = [str(uuid.uuid4()) for _ in range(3)]

    async def keys(request: Request) -> JSONResponse:
        first = request.query_params.get("offset", "0") == "0"
        return JSONResponse([{"id": key} for key in ids] if first else [])

    async def stats(request: Request) -> JSONResponse:
        asked.append(request.query_params.get("key"))
        return JSONResponse({"window": "1h", "keys": []})

    app = Starlette(routes=[Route("/admin/keys", keys), Route("/admin/stats", stats)])
    with ThreadedServer(app) as server:
        result = CliRunner().invoke(
            cli,
            ["stats", "--by", "key", "--key", ids[1][:8], "--url", server.url, "--json"],
            env={"ADMIN_API_KEY": "admin-key"},
        )
    assert result.exit_code == 0, result.output
    assert asked == [ids[1]]
