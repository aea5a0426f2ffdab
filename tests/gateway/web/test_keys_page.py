"""The Keys pages in a real headless Chromium: issue a key (shown once, copied), see it
listed by its prefix, change its limits, read its usage chart, revoke it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import httpx
import pytest

from gateway.accounting.windows import BUCKETS
from gateway.admission.key_format import key_hash
from shared.db import Database
from shared.models import ClientKey, KeyUsageMinute
from tests.conftest import ADMIN_KEY
from tests.gateway.web.test_pages import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.support import ThreadedServer

HEADERS = {"X-API-Key": ADMIN_KEY}


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="make test installs Debian's chromium")
def test_an_instructor_issues_changes_watches_and_revokes_a_key(
    start_gateway: Callable[..., ThreadedServer], database: Database
) -> None:
    from playwright.sync_api import expect, sync_playwright

    gateway = start_gateway()
    httpx.put(
        f"{gateway.url}/admin/groups/cs101", json={"limits": {"max_concurrent": 3}}, headers=HEADERS
    ).raise_for_status()
    errors: list[str] = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway.url)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
        page.goto(f"{gateway.url}/")
        page.evaluate(f"sessionStorage.setItem('multiverse.adminKey', {ADMIN_KEY!r})")
        page.goto(f"{gateway.url}/")
        page.click("nav a[href='/keys']")
        expect(page.locator("h1")).to_have_text("Client keys")
        expect(page.locator("#keys tbody")).to_contain_text("No key yet")
        expect(page.locator("#c-group option")).to_have_count(2)

        page.click("#c-submit")  # nothing filled in
        expect(page.locator("#c-owner-error")).to_have_text("Required.")
        page.fill("#c-owner", "alice")
        page.fill("#c-name", "laptop")
        page.fill("#c-tokens_per_minute", "5")  # below one request's reservation
        page.click("#c-submit")
        expect(page.locator("#c-result")).to_contain_text("limits.tokens_per_minute")
        page.fill("#c-tokens_per_minute", "")
        page.fill("#c-requests_per_minute", "30")
        page.select_option("#c-group", "cs101")
        page.click("#c-submit")
        expect(page.locator("#issued")).to_be_visible()
        key = page.locator("#issued-key").inner_text()
        assert key.startswith("mvk_")
        with database.reading() as session:
            stored = session.query(ClientKey).one()
            assert stored.key_hash == key_hash(key) and stored.limits == {"requests_per_minute": 30}
            assert stored.group_name == "cs101"
        page.click("#copy-key")
        assert page.evaluate("navigator.clipboard.readText()") == key
        row = page.locator("#keys tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text(key[:8])
        expect(row).to_contain_text("alice")
        expect(row).to_contain_text("active")
        page.screenshot(path=str(ARTIFACTS / "keys.png"), full_page=True)
        page.click("#issued-done")
        expect(page.locator("#issued")).to_be_hidden()
        assert key not in page.content()
        page.reload()
        expect(page.locator("#keys tbody tr")).to_have_count(1)
        assert key not in page.content()  # the list shows the prefix only

        minute = int(time.time()) // 60
        latency = [0] * BUCKETS
        latency[5] = 3
        with database.writing() as session:
            session.add(
                KeyUsageMinute(
                    minute=minute,
                    key_id=stored.id,
                    model="demo",
                    requests=3,
                    failures=0,
                    prompt_tokens=30,
                    completion_tokens=12,
                    latency_counts=latency,
                )
            )
        page.click(f"a[href='/keys/{stored.id}']")
        expect(page.locator("#key")).to_contain_text("alice")
        expect(page.locator("#key")).to_contain_text("requests per minute 30")
        expect(page.locator("#key-totals")).to_contain_text("3 requests, 42 tokens")
        charts = page.locator("#key-charts figure.chart")
        expect(charts).to_have_count(5)  # requests, errors, latency, tokens, models' share
        box = charts.first.locator("canvas").bounding_box()
        assert box is not None and box["width"] > 200
        expect(page.locator("#k-requests_per_minute")).to_have_value("30")
        page.fill("#k-requests_per_minute", "")
        page.fill("#k-tokens_per_day", "50000")
        page.click("#k-save")
        expect(page.locator("#key")).to_contain_text("tokens per day 50000")
        page.screenshot(path=str(ARTIFACTS / "key.png"), full_page=True)
        shown = httpx.get(f"{gateway.url}/admin/keys/{stored.id}", headers=HEADERS).json()
        assert shown["limits"] == {"tokens_per_day": 50000}  # the emptied one cleared

        page.goto(f"{gateway.url}/owners/alice")  # her side as a client, beside her servers
        expect(page.locator("#owner")).to_contain_text("As a client: 1 key(s); 3 requests made")
        expect(page.locator("#owner-keys tbody tr")).to_contain_text(key[:8])
        page.click("nav a[href='/keys']")
        page.click("#keys button.revoke")
        expect(page.locator("#keys tbody")).to_contain_text("No key")
        assert dialogs and "Revoke" in dialogs[-1] and key[:8] in dialogs[-1]
        page.check("#f-revoked")
        expect(page.locator("#keys tbody tr")).to_contain_text("revoked")
        browser.close()
    assert httpx.get(f"{gateway.url}/admin/keys/{stored.id}", headers=HEADERS).json()["status"] == (
        "revoked"
    )
    # The one 400 is the refused limit above, which the page reported in words.
    assert [e for e in errors if "status of 400" not in e] == [] and len(errors) <= 1
