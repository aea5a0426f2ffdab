"""What a new user reads on the dashboard (#19 item 26), in a real headless Chromium:
the header counts the servers listed, a percentage axis stops at 100 %, and each
backend's share of its model's requests stands beside the intended share, the
backend named by more than its UUID."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest

from gateway.cli.demo_backend import create_demo_app
from tests.conftest import ADMIN_KEY
from tests.fakes import model_list_backend
from tests.gateway.web.test_pages import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.support import ThreadedServer, wait_for

HEADERS = {"X-API-Key": ADMIN_KEY}
# Every uPlot the page makes, kept for the test to read its scales (uPlot draws its
# axes on a canvas): the vendored script's `var uPlot = ...` goes through this setter.
KEEP_PLOTS = """
window.__plots = [];
Object.defineProperty(window, "uPlot", {
  configurable: true,
  get() { return window.__uPlotClass; },
  set(U) {
    window.__uPlotClass = new Proxy(U, { construct(target, args) {
      const plot = Reflect.construct(target, args);
      window.__plots.push(plot);
      return plot;
    } });
  },
});
"""
Y_MAX_OF = """title => window.__plots
  .filter(p => p.root.closest("figure")?.querySelector("figcaption")?.textContent === title)
  .map(p => p.scales.y.max)"""


@pytest.fixture
def four_backends() -> Iterator[list[ThreadedServer]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(ThreadedServer(create_demo_app("m", chunk_interval_ms=0)))
            for _ in range(4)
        ]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="make test installs Debian's chromium")
def test_a_new_user_reads_counts_shares_and_backend_names(
    start_gateway: Callable[..., ThreadedServer], four_backends: list[ThreadedServer]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    gateway = start_gateway(
        rate_limit_per_minute=0, slow_start_seconds=0, routing_strategy="round_robin"
    )
    ids = [
        httpx.post(
            f"{gateway.url}/admin/register",
            json={"endpoint_url": backend.url, "metadata": {"description": f"box {index}"}},
            headers=HEADERS,
            timeout=15,
        ).json()["registration_id"]
        for index, backend in enumerate(four_backends)
    ]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(8):  # round robin: two each, a flat 100 % on the model-share chart
        assert httpx.post(f"{gateway.url}/v1/chat/completions", json=body).status_code == 200

    def written() -> bool:
        stats = httpx.get(f"{gateway.url}/admin/stats?window=5m", headers=HEADERS).json()
        return bool(stats["totals"]["requests"] == 8)

    wait_for(written, what="the requests written to usage_minutes")
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.add_init_script(KEEP_PLOTS)
        page.goto(f"{gateway.url}/")
        # A new user: the page asks for the key, they type it in.
        page.fill("#key-input", ADMIN_KEY)
        page.click("#key-form button[type=submit]")
        expect(page.locator("#servers tbody tr")).to_have_count(4)
        expect(page.locator("#quick-servers")).to_have_text("4 servers")
        expect(page.locator("#quick-healthy")).to_have_text("4 healthy")

        expect(page.locator("#charts figure.chart")).to_have_count(6)
        for title in ("Each model's share of requests (%)", "Error rate (%)"):
            maxima = page.evaluate(Y_MAX_OF, title)
            assert maxima and all(0 < top <= 100 for top in maxima), (title, maxima)

        balance = page.locator("#balance tbody tr")
        expect(balance).to_have_count(4)
        for index, registration_id in enumerate(ids):
            row = balance.filter(has_text=f"{registration_id[:8]} ")
            name = f"{registration_id[:8]} {four_backends[index].url[7:]} (box {index})"
            expect(row.locator("td")).to_have_text(["m", name, "25 %", "25 %", "0 %"])
        page.screenshot(path=str(ARTIFACTS / "dashboard-balance.png"), full_page=True)
        browser.close()
    assert errors == []


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="make test installs Debian's chromium")
def test_without_the_key_the_header_counts_a_server_of_two_models_once(
    start_gateway: Callable[..., ThreadedServer],
) -> None:
    from playwright.sync_api import expect, sync_playwright

    gateway = start_gateway(rate_limit_per_minute=0)
    with ThreadedServer(model_list_backend("chat", "embed")) as backend:
        answer = httpx.post(
            f"{gateway.url}/admin/register", json={"endpoint_url": backend.url}, headers=HEADERS
        )
        assert answer.status_code == 201, answer.text
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"{gateway.url}/models")  # no admin key in this tab
            expect(page.locator("#models .card")).to_have_count(2)
            expect(page.locator("#quick-servers")).to_have_text("1 server")
            expect(page.locator("#quick-healthy")).to_have_text("1 healthy")
            browser.close()
