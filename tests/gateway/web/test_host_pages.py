"""The pages a host meets (#21): who owns a model name, and why a server does not
serve a name it lists; in a real headless Chromium."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest

from gateway.cli.demo_backend import create_demo_app
from tests.conftest import ADMIN_KEY
from tests.gateway.web.test_pages import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.support import ThreadedServer

ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="make test installs Debian's chromium")
def test_the_models_page_shows_owners_and_a_server_page_says_what_it_may_not_serve(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    from playwright.sync_api import expect, sync_playwright

    gateway = start_gateway()
    errors: list[str] = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (
        ThreadedServer(create_demo_app("llama")) as first,
        ThreadedServer(create_demo_app("llama")) as second,
        sync_playwright() as playwright,
    ):
        alice = httpx.post(
            f"{gateway.url}/admin/register",
            json={"endpoint_url": first.url, "model_name": "llama", "claim": True,
                  "metadata": {"student_id": "alice"}},
            headers=ADMIN,
        )  # fmt: skip
        assert alice.status_code == 201, alice.text
        bob = httpx.post(
            f"{gateway.url}/admin/register", json={"endpoint_url": second.url}, headers=ADMIN
        )
        bob_id, bob_token = bob.json()["registration_id"], bob.json()["management_token"]

        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{gateway.url}/models")
        expect(page.locator("#models .claim")).to_contain_text("Owned by alice")
        page.screenshot(path=str(ARTIFACTS / "models-owned.png"))

        # Bob, with his own token only, sees why his server does not serve the name.
        page.goto(f"{gateway.url}/servers/{bob_id}")
        page.fill("#token-input", bob_token)
        page.click("#token-form button[type=submit]")
        expect(page.locator("#server .withheld")).to_contain_text("claimed by alice")
        expect(page.locator("#server")).to_contain_text("canary generation(s) of 1 token")
        # Its own traffic charts, read with its token alone (#21 item 2).
        expect(page.locator("#server-charts figure").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "server-withheld.png"))
        browser.close()
    assert errors == []
