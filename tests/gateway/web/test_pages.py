"""The web UI: pages served by the gateway, and a real headless Chromium using them."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.cli.demo_backend import create_demo_app
from gateway.web.pages import PAGES
from tests.conftest import ADMIN_KEY
from tests.support import (
    REPO,
    ThreadedServer,
    process_settings,
    start_healthd,
    wait_for,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "artifacts" / "screenshots"


@pytest.mark.parametrize("path", [p.replace("{server_id}", "abc") for p in PAGES])
def test_pages_are_served_without_external_assets(gateway: ThreadedServer, path: str) -> None:
    response = httpx.get(f"{gateway.url}{path}")
    assert response.status_code == 200
    assert "Multiverse Inference Gateway" in response.text
    assert 'aria-current="page"' in response.text
    assert not re.search(r"""(src|href)=["']https?://""", response.text)


def test_static_assets_are_served(gateway: ThreadedServer) -> None:
    for asset in ("app.js", "app.css", "dashboard.js", "register.js", "server.js"):
        assert httpx.get(f"{gateway.url}/static/{asset}").status_code == 200


def test_test_connection_endpoint(gateway: ThreadedServer, demo_backend: ThreadedServer) -> None:
    headers = {"X-API-Key": ADMIN_KEY}
    good = httpx.post(
        f"{gateway.url}/admin/probe", json={"endpoint_url": demo_backend.url}, headers=headers
    )
    assert good.status_code == 200 and good.json()["reported_models"] == ["demo"]
    listed = httpx.get(f"{gateway.url}/admin/servers", headers=headers).json()
    assert listed == []  # nothing was stored


@pytest.fixture
def healthd(tmp_path: Path, database_url: str) -> Iterator[None]:
    process = start_healthd(
        tmp_path, process_settings(tmp_path, database_url, HEALTH_CHECK_INTERVAL_SECONDS="300")
    )
    yield
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="make test installs Debian's chromium")
def test_a_person_registers_checks_and_deletes_a_server_and_chats(
    start_gateway: Callable[..., ThreadedServer], healthd: None
) -> None:
    from playwright.sync_api import expect, sync_playwright

    gateway = start_gateway(rate_limit_per_minute=0, slow_start_seconds=0)
    errors: list[str] = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (
        ThreadedServer(create_demo_app("demo", chunk_interval_ms=10)) as backend,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda dialog: dialog.accept())

        page.goto(f"{gateway.url}/")
        page.fill("#key-input", ADMIN_KEY)
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-status")).to_have_text("set")
        page.screenshot(path=str(ARTIFACTS / "dashboard-empty.png"))

        page.goto(f"{gateway.url}/register")
        page.fill("#backend_model", "demo")  # a rename needs the name clients use
        expect(page.locator("#backend_model-error")).not_to_be_empty()
        page.fill("#backend_model", "")  # no model name: every model the server lists
        page.fill("#endpoint_url", backend.url)
        page.fill("#student_id", "alice")
        page.click("#test-connection")
        expect(page.locator("#test-result")).to_contain_text("Reachable and healthy")
        page.click("#register-submit")
        expect(page.locator("#registered")).to_be_visible()
        registration_id = page.locator("#registration-id").inner_text()
        page.screenshot(path=str(ARTIFACTS / "register.png"))

        with ThreadedServer(create_demo_app("alpha")) as other:
            httpx.post(
                f"{gateway.url}/admin/register",
                json={"model_name": "alpha", "endpoint_url": other.url},
                headers={"X-API-Key": ADMIN_KEY},
            ).raise_for_status()
        page.goto(f"{gateway.url}/")
        rows = page.locator("#servers tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("alpha")  # newest registration first
        page.select_option("#sort", "model_name")
        expect(rows.first).to_contain_text("alpha")
        page.select_option("#filter-status", "healthy")
        expect(rows).to_have_count(2)
        page.fill("#filter-student", "ali")
        expect(rows).to_have_count(1)
        row = rows.first
        expect(row).to_contain_text("all listed: demo")
        expect(row).to_contain_text("alice")
        page.fill("#filter-student", "")
        page.select_option("#filter-status", "")
        page.fill("#filter-model", "nothing-like-this")
        expect(page.locator("#servers tbody")).to_contain_text("No server matches")
        page.fill("#filter-model", "dem")
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
        page.set_viewport_size({"width": 375, "height": 800})
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"))
        page.set_viewport_size({"width": 1280, "height": 800})

        page.click(f"a[href='/servers/{registration_id}']")
        expect(page.locator("#server")).to_contain_text(backend.url)
        checks_before = page.locator("#checks tbody tr").count()
        page.click("#force-check")
        page.wait_for_function(
            "n => document.querySelectorAll('#checks tbody tr').length > n",
            arg=checks_before,
            timeout=15000,
        )
        page.screenshot(path=str(ARTIFACTS / "server.png"))

        page.click("#edit-link")
        expect(page.locator("#e-model_name")).to_have_value("")  # pre-filled: every model
        expect(page.locator("#e-endpoint_url")).to_have_value(backend.url)
        page.fill("#e-description", "moved to the lab")
        expect(page.locator(".field.changed")).to_have_count(1)
        page.click("#edit-save")
        page.wait_for_url(f"{gateway.url}/servers/{registration_id}")
        expect(page.locator("#server")).to_contain_text("moved to the lab")

        page.goto(f"{gateway.url}/logs")
        page.fill("#log-text", "server registered")
        expect(page.locator("#logs tbody")).to_contain_text("server registered")
        page.screenshot(path=str(ARTIFACTS / "logs.png"))

        page.goto(f"{gateway.url}/settings")
        expect(page.locator("#system")).to_contain_text("ADMIN_API_KEY")
        expect(page.locator("#system")).not_to_contain_text(ADMIN_KEY)
        page.screenshot(path=str(ARTIFACTS / "settings.png"))

        page.goto(f"{gateway.url}/models")
        expect(page.locator("#models")).to_contain_text("1 healthy of 1")
        page.fill("#model-search", "alp")
        expect(page.locator("#models .card")).to_have_count(1)

        page.goto(f"{gateway.url}/playground")
        expect(page.locator("#pg-model option")).to_have_count(2)
        page.select_option("#pg-model", "demo")
        page.fill("#pg-message", "tell me something")
        page.click("#pg-send")
        expect(page.locator("#pg-reply")).to_contain_text("Hello from the demo backend!")
        host = backend.url.removeprefix("http://")  # named, and linked to its page
        expect(page.locator("#pg-server")).to_have_text(
            f"{registration_id[:8]} {host} (moved to the lab)"
        )
        expect(page.locator(f"#pg-server a[href='/servers/{registration_id}']")).to_be_visible()
        expect(page.locator("#pg-tokens")).to_contain_text("completion")
        page.screenshot(path=str(ARTIFACTS / "playground.png"))

        page.goto(f"{gateway.url}/servers/{registration_id}")
        page.click("#delete-server")
        page.wait_for_url(f"{gateway.url}/")
        expect(page.locator("#servers tbody tr")).to_have_count(1)
        expect(page.locator("#servers tbody")).not_to_contain_text("alice")
        browser.close()
    assert errors == []


def test_logs_and_system_endpoints(gateway: ThreadedServer, demo_backend: ThreadedServer) -> None:
    headers = {"X-API-Key": ADMIN_KEY}
    httpx.post(
        f"{gateway.url}/admin/register",
        json={"model_name": "demo", "endpoint_url": demo_backend.url},
        headers=headers,
    )
    entries = httpx.get(
        f"{gateway.url}/admin/logs", params={"q": "server registered"}, headers=headers
    ).json()["entries"]
    assert entries and entries[0]["message"] == "server registered"
    assert entries[0]["component"] == "registry" and entries[0]["process"] == "gateway"
    errors_only = httpx.get(
        f"{gateway.url}/admin/logs", params={"level": "error"}, headers=headers
    ).json()["entries"]
    assert all(e["level"] in ("error", "critical") for e in errors_only)
    bad = httpx.get(f"{gateway.url}/admin/logs", params={"level": "loud"}, headers=headers)
    assert bad.status_code == 400
    system = httpx.get(f"{gateway.url}/admin/system", headers=headers)
    assert system.status_code == 200
    assert ADMIN_KEY not in system.text
    info = system.json()
    assert info["settings"]["ADMIN_API_KEY"] == "•••••• (set)"
    assert info["database"]["registrations"] == 1 and info["versions"]["gateway"]


AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"


def test_pages_pass_axe(
    start_gateway: Callable[..., ThreadedServer], demo_backend: ThreadedServer
) -> None:
    """WCAG 2.1 A and AA rules (labels, contrast, names, landmarks) on every page,
    checked by axe-core (installed from npm by make test)."""
    from playwright.sync_api import sync_playwright

    assert AXE.exists(), "make test installs axe-core from npm"
    gateway = start_gateway(rate_limit_per_minute=0)
    registered = httpx.post(
        f"{gateway.url}/admin/register",
        json={"model_name": "demo", "endpoint_url": demo_backend.url},
        headers={"X-API-Key": ADMIN_KEY},
    ).json()["registration_id"]
    key_id = httpx.post(
        f"{gateway.url}/admin/keys",
        json={"name": "laptop", "owner": "alice"},
        headers={"X-API-Key": ADMIN_KEY},
    ).json()["id"]
    problems: dict[str, list[str]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{gateway.url}/")
        page.evaluate(f"sessionStorage.setItem('multiverse.adminKey', {ADMIN_KEY!r})")
        for path in PAGES:
            concrete = path.replace("{server_id}", registered).replace("{key_id}", key_id)
            page.goto(f"{gateway.url}{concrete}")
            page.wait_for_load_state("networkidle")
            name = path.strip("/").replace("/", "-").replace("{server_id}", "id") or "dashboard"
            name = name.replace("{key_id}", "id")
            for width, label in ((1280, "desktop"), (375, "phone")):
                page.set_viewport_size({"width": width, "height": 900})
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
            page.add_script_tag(path=str(AXE))
            violations = page.evaluate(
                """async () => (await axe.run(document, {runOnly: {type: 'tag',
                     values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}}))
                   .violations.map(v => `${v.id}: ${v.nodes.length} x ${v.help}`)"""
            )
            if violations:
                problems[path] = violations
        browser.close()
    assert problems == {}


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="make test installs Debian's chromium")
def test_charts_are_drawn_and_labelled(
    start_gateway: Callable[..., ThreadedServer], demo_backend: ThreadedServer
) -> None:
    """The dashboard's, a server's and an owner's charts (uPlot, served by the gateway)
    after real traffic: drawn, captioned, with a legend, and no console error."""
    from playwright.sync_api import expect, sync_playwright

    gateway = start_gateway(rate_limit_per_minute=0)
    headers = {"X-API-Key": ADMIN_KEY}
    registered = httpx.post(
        f"{gateway.url}/admin/register",
        json={"endpoint_url": demo_backend.url, "metadata": {"student_id": "alice"}},
        headers=headers,
    ).json()["registration_id"]
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(5):
        assert httpx.post(f"{gateway.url}/v1/chat/completions", json=body).status_code == 200

    def counted() -> bool:
        stats = httpx.get(f"{gateway.url}/admin/stats?window=5m", headers=headers).json()
        return bool(stats["totals"]["requests"] == 5)

    wait_for(counted, what="the requests in the statistics")
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{gateway.url}/")
        page.evaluate(f"sessionStorage.setItem('multiverse.adminKey', {ADMIN_KEY!r})")
        page.goto(f"{gateway.url}/")
        charts = page.locator("#charts figure.chart")
        expect(charts).to_have_count(6)  # five measures and each model's share
        captions = page.locator("#charts figcaption").all_inner_texts()
        assert captions[:2] == ["Requests per minute", "Error rate (%)"]
        for index in range(6):
            box = charts.nth(index).locator("canvas").bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100
        expect(page.locator("#charts .u-legend").nth(2)).to_contain_text("p95")
        expect(page.locator("#traffic-totals")).to_contain_text("5 requests")
        page.select_option("#chart-window", "5m")
        expect(page.locator("#charts figure.chart")).to_have_count(6)
        page.screenshot(path=str(ARTIFACTS / "dashboard-charts.png"), full_page=True)

        page.goto(f"{gateway.url}/servers/{registered}")
        expect(page.locator("#server-charts figure.chart")).to_have_count(6)
        page.goto(f"{gateway.url}/owners/alice")
        expect(page.locator("#owner")).to_contain_text("5 requests served")
        expect(page.locator("#owner")).to_contain_text("As a client: 0 key(s)")
        expect(page.locator("#owner-keys tbody")).to_contain_text("No client key")
        expect(page.locator("#owner-servers tbody tr")).to_have_count(1)
        expect(page.locator("#owner-charts figure.chart")).to_have_count(6)
        page.screenshot(path=str(ARTIFACTS / "owner.png"), full_page=True)
        browser.close()
    assert errors == []


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="make test installs Debian's chromium")
def test_a_host_manages_its_server_with_its_token(
    start_gateway: Callable[..., ThreadedServer], demo_backend: ThreadedServer
) -> None:
    """No admin key: the host pastes its management token, sees its server, drains it."""
    from playwright.sync_api import expect, sync_playwright

    gateway = start_gateway()
    registered = httpx.post(
        f"{gateway.url}/admin/register",
        json={"endpoint_url": demo_backend.url},
        headers={"X-API-Key": ADMIN_KEY},
    ).json()
    registration_id, token = registered["registration_id"], registered["management_token"]
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{gateway.url}/servers/{registration_id}")
        expect(page.locator("#token-form")).to_be_visible()  # no admin key in this tab
        expect(page.locator("#key-dialog")).not_to_be_visible()
        page.fill("#token-input", token)
        page.click("#token-form button[type=submit]")
        expect(page.locator("#server")).to_contain_text(demo_backend.url)
        page.click("#drain")
        expect(page.locator("#server")).to_contain_text("draining")
        assert token not in page.content()
        browser.close()
    shown = httpx.get(
        f"{gateway.url}/admin/servers/{registration_id}", headers={"X-API-Key": ADMIN_KEY}
    ).json()
    assert shown["draining"] is True and errors == []
