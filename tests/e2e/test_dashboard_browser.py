"""The dashboard in headless Chromium, under the hub's own headers: an admin logs in through
the form, the overview shows the report (big numbers, heatmap, tables), the two charts are
drawn by dashboard.js with the vendored Chart.js (their canvases have pixels), nothing is
blocked by the page's policy (a blocked script or style is a console error), and signing out
ends the login. A screenshot goes to /tmp/dashboard-overview.png (and tests/.artifacts/).

The server is the dashboard alone (hub.http.dashboard.Dashboard) with the fixed report of
tests/integration/test_dashboard.py: no Synapse; a database for the logins only, on each
engine (tests/e2e/engines.py).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from ipaddress import ip_network
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, expect

from hub.db.engine import migrate, open_database
from hub.http.dashboard import Dashboard
from hub.http.security import install_security_headers
from hub.kpi.model import Period, Report
from tests.browser import chromium_available, chromium_browser, new_page, screenshot, wait_until
from tests.e2e.engines import HubDatabases
from tests.integration.test_dashboard import PASSWORD, TIMEZONE, dashboard_config, sample_report

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="chromium is not installed"),
]

SHOT = "/tmp/dashboard-overview.png"


class Site:
    def __init__(self) -> None:
        self.reports: list[Report] = []

    async def report(self, period: Period) -> Report:
        self.reports.append(sample_report(period))
        return self.reports[-1]


@pytest.fixture
async def site(
    shop_language: Callable[[str], None], tmp_path: Path, hub_databases: HubDatabases
) -> AsyncIterator[tuple[str, Site]]:
    shop_language("de_DE")  # a German shop: its words (where translated) and its figures
    s = Site()
    db = open_database(await hub_databases.url("dashboard", tmp_path))
    await migrate(db)
    dashboard = Dashboard(
        dashboard_config(),
        s.report,
        shop_name="Farben & Co",
        locale="de_DE",
        timezone=TIMEZONE,
        db=db,
        trusted_proxies=[ip_network("127.0.0.1/32")],
    )
    app = web.Application()
    install_security_headers(app)
    dashboard.add_routes(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), s
    await server.close()
    await db.close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium_browser() as b:
        yield b


def watch(page: Page) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"pageerror: {err}"))
    # A load that fails is reported by the response handler (favicon.ico aside); any other
    # console error (a script or style the policy blocked, an exception) is a problem.
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and "Failed to load resource" not in m.text
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    return problems


async def painted(page: Page, test_id: str) -> int:
    """How many pixels of a chart's canvas are not blank."""
    count: int = await page.get_by_test_id(test_id).evaluate(
        """canvas => {
            const { width, height } = canvas;
            const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
            let n = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
            return n;
        }"""
    )
    return count


async def test_admin_reads_the_overview_and_signs_out(
    site: tuple[str, Site], browser: Browser
) -> None:
    base, s = site
    async with new_page(browser, viewport={"width": 1440, "height": 900}) as page:
        problems = watch(page)
        await page.goto(f"{base}/dashboard")
        # Not logged in: the login form.
        assert page.url.endswith("/dashboard/login")
        await page.locator("#username").fill("anna")
        await page.locator("#password").fill("wrong password")
        await page.get_by_test_id("login").click()
        await expect(page.get_by_test_id("login-message")).to_be_visible()
        assert page.url.endswith("/dashboard/login")
        await screenshot(page, "dashboard-login-refused")
        await page.locator("#password").fill(PASSWORD)
        await page.get_by_test_id("login").click()
        await page.wait_for_url(f"{base}/dashboard")

        report = s.reports[-1]
        # The big numbers, in the shop's locale.
        await expect(page.get_by_test_id("tile-revenue").locator(".value")).to_have_text(
            format_eur(report.totals.revenue)
        )
        await expect(page.get_by_test_id("tile-conversations").locator(".value")).to_have_text(
            str(report.totals.conversations)
        )
        await expect(page.get_by_test_id("tile-conversion").locator(".value")).to_have_text(
            "18,3\u00a0%"
        )
        await expect(
            page.get_by_test_id("tile-average_order_value").locator(".value")
        ).to_have_text(format_eur(report.totals.average_order_value or 0))

        # The charts are drawn: Chart.js ran under the policy and painted both canvases.
        await wait_until(page, "document.documentElement.dataset.charts === 'drawn'")
        assert await painted(page, "chart-days") > 5000
        assert await painted(page, "chart-advisers") > 2000

        # The heatmap: 7 rows of 24 hours, the report's counts in the cells.
        heatmap = page.get_by_test_id("heatmap")
        await expect(heatmap.locator("tbody tr")).to_have_count(7)
        cells = await heatmap.locator("tbody td").evaluate_all(
            "tds => tds.map(td => [Number(td.dataset.incoming), Number(td.dataset.missed)])"
        )
        assert cells == [list(cell) for day in report.heatmap for cell in day]
        monday_ten = heatmap.locator("tbody tr").nth(0).locator("td").nth(10)
        await expect(monday_ten).to_have_class("h5")
        await expect(monday_ten).to_contain_text("14")

        # The tables per adviser and per channel: one row per slice, the report's figures.
        advisers = page.get_by_test_id("table-by_adviser")
        await expect(advisers.locator("tbody th")).to_have_text(
            [s.label for s in report.by_adviser]
        )
        anna = advisers.locator("tbody tr").nth(0).locator("td")
        await expect(anna.nth(0)).to_have_text("128")
        await expect(anna.nth(6)).to_have_text("2.410,50\u00a0€")
        channels = page.get_by_test_id("table-by_channel")
        await expect(channels.locator("tbody th")).to_have_text(
            [s.label for s in report.by_channel]
        )

        # The CSV links carry the period; one of them downloads with the login.
        href = await page.get_by_test_id("csv-by_channel").get_attribute("href")
        assert href == "/dashboard/export/by_channel.csv?days=30"
        body = await page.evaluate("url => fetch(url).then(r => r.text())", f"{base}{href}")
        assert body.splitlines()[1].startswith("whatsapp,WhatsApp,")

        path = await screenshot(page, "dashboard-overview", full_page=True)
        shutil.copyfile(path, SHOT)

        # Another period from the picker.
        await page.get_by_test_id("preset-7").click()
        await page.wait_for_url(f"{base}/dashboard?days=7")
        await wait_until(page, "document.documentElement.dataset.charts === 'drawn'")
        assert len(s.reports[-1].by_day) == 7

        # Signing out ends the login: the dashboard asks for it again.
        await page.get_by_test_id("logout").click()
        await page.wait_for_url(f"{base}/dashboard/login?signed_out")
        await expect(page.get_by_test_id("login-message")).to_be_visible()
        await page.goto(f"{base}/dashboard")
        assert page.url.endswith("/dashboard/login")
        assert problems == []


async def test_the_overview_on_a_phone(site: tuple[str, Site], browser: Browser) -> None:
    base, _s = site
    async with new_page(browser, mobile=True) as page:
        problems = watch(page)
        await page.goto(f"{base}/dashboard/login")
        await page.locator("#username").fill("anna")
        await page.locator("#password").fill(PASSWORD)
        await page.get_by_test_id("login").click()
        await page.wait_for_url(f"{base}/dashboard")
        await wait_until(page, "document.documentElement.dataset.charts === 'drawn'")
        assert await painted(page, "chart-days") > 2000
        # Wide tables scroll inside their card; the page itself does not.
        width = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert width <= 0, f"page is {width}px wider than the phone"
        await screenshot(page, "dashboard-overview-mobile", full_page=True)
        assert problems == []


def format_eur(minor: int) -> str:
    """German euros as CLDR writes them: 1.234,56 €."""
    whole, cents = divmod(minor, 100)
    return f"{whole:,}".replace(",", ".") + f",{cents:02d}\u00a0€"
