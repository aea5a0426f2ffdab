"""The registration and edit forms take `claim` and `notify_format` (#21), and show the
gateway's own refusals under the field they concern; the server page shows the answers
that named another model. In a real headless Chromium."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from gateway.cli.demo_backend import create_demo_app
from shared.db import Database
from shared.models import ModelServer
from tests.conftest import ADMIN_KEY
from tests.gateway.web.test_pages import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.support import ThreadedServer

ADMIN = {"X-API-Key": ADMIN_KEY}
NOTIFY = "http://127.0.0.1:9/hook"  # never called: no health transition in these tests
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="make test installs Debian's chromium"
)


def shown(gateway: ThreadedServer, registration_id: str) -> dict[str, Any]:
    detail: dict[str, Any] = httpx.get(
        f"{gateway.url}/admin/servers/{registration_id}", headers=ADMIN
    ).json()
    return detail


def test_the_register_form_claims_a_name_and_picks_a_notify_format(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    from playwright.sync_api import expect, sync_playwright

    gateway = start_gateway()
    errors: list[str] = []
    with ThreadedServer(create_demo_app("llama")) as backend, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{gateway.url}/")
        page.fill("#key-input", ADMIN_KEY)
        page.click("#key-form button[type=submit]")
        page.goto(f"{gateway.url}/register")
        page.fill("#endpoint_url", backend.url)
        page.fill("#notify_url", NOTIFY)
        page.fill("#notify_format", "teams")  # the gateway's list is the one that counts
        page.click("#register-submit")
        expect(page.locator("#notify_format-error")).to_contain_text("ntfy")
        expect(page.locator("#notify_format")).to_have_attribute("aria-invalid", "true")
        page.fill("#notify_format", "slack")
        page.check("#claim")  # ... with no model name to own
        page.click("#register-submit")
        expect(page.locator("#claim-error")).to_contain_text("claim needs model_name")
        expect(page.locator("#notify_format-error")).to_be_empty()
        page.fill("#model_name", "llama")
        page.click("#register-submit")
        expect(page.locator("#registered")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "register-claim.png"))
        registration_id = page.locator("#registration-id").inner_text()
        browser.close()
    server = shown(gateway, registration_id)
    assert server["notify_format"] == "slack" and server["notify_url"] == NOTIFY
    assert server["owned_models"] == ["llama"]
    assert errors == []


def test_a_host_edits_its_claim_and_notify_format_and_sees_why_a_claim_is_refused(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    from playwright.sync_api import expect, sync_playwright

    gateway = start_gateway()
    errors: list[str] = []
    with (
        ThreadedServer(create_demo_app("other")) as first,
        ThreadedServer(create_demo_app("other")) as second,
        sync_playwright() as playwright,
    ):
        ids, token = [], ""
        for backend in (first, second):
            answer = httpx.post(
                f"{gateway.url}/admin/register",
                json={"endpoint_url": backend.url, "model_name": "other", "notify_url": NOTIFY},
                headers=ADMIN,
            ).json()
            ids.append(answer["registration_id"])
            token = token or answer["management_token"]
        mine = ids[0]
        with database.writing() as session:  # what the proxy counted of its answers
            counts = {"answers": 5, "mismatched": 3, "named": "tiny-gpt2", "suspect": True}
            session.execute(
                update(ModelServer)
                .where(ModelServer.id == mine)
                .values(model_mismatches={"other": counts})
            )
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"{gateway.url}/servers/{mine}")
        page.fill("#token-input", token)  # the host's own token, no admin key
        page.click("#token-form button[type=submit]")
        expect(page.locator("#server .mismatches")).to_contain_text("3 of 5")
        expect(page.locator("#server .mismatches")).to_contain_text("tiny-gpt2")
        expect(page.locator("#server .mismatches")).to_contain_text("suspect")

        page.goto(f"{gateway.url}/servers/{mine}/edit")
        expect(page.locator("#e-notify_format")).to_have_value("json")
        expect(page.locator("#e-claim")).not_to_be_checked()
        page.fill("#e-notify_format", "teams")
        page.click("#edit-save")
        expect(page.locator("#e-notify_format-error")).to_contain_text("discord")
        page.fill("#e-notify_format", "discord")
        page.check("#e-claim")  # the other server serves "other" too: 409
        page.click("#edit-save")
        expect(page.locator("#e-claim-error")).to_contain_text("other server(s) serve")
        expect(page.locator("#e-notify_format-error")).to_be_empty()
        page.screenshot(path=str(ARTIFACTS / "edit-claim-refused.png"))
        assert shown(gateway, mine)["notify_format"] == "discord"  # saved before the claim
        assert shown(gateway, mine)["owned_models"] == []

        httpx.delete(f"{gateway.url}/admin/register/{ids[1]}", headers=ADMIN).raise_for_status()
        page.reload()
        expect(page.locator("#e-notify_format")).to_have_value("discord")
        page.check("#e-claim")
        page.click("#edit-save")
        expect(page).to_have_url(f"{gateway.url}/servers/{mine}")
        assert shown(gateway, mine)["owned_models"] == ["other"]
        page.goto(f"{gateway.url}/servers/{mine}/edit")
        expect(page.locator("#e-claim")).to_be_checked()
        assert token not in page.content()
        browser.close()
    assert errors == []
