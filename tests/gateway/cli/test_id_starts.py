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
