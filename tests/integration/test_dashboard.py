"""The dashboard over HTTP (aiohttp's test client): logging in and out, CSRF, the limit on
failed logins, every URL refused without a login, the overview and the CSV exports against
the report they were made from. The report is a fixed one (`sample_report`, also the browser
test's); the real computation (hub.kpi.report) is checked to plug in at the end. The logins
are kept in a SQLite database here; tests/integration/test_dashboard_sessions.py runs the
store on both engines, with two dashboards (two processes) on one database."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import argon2
import pytest
from aiohttp import CookieJar, web
from aiohttp.test_utils import TestClient, TestServer

from hub.config import Config
from hub.config.dashboard import DashboardConfig
from hub.core import clock
from hub.db.database import Database
from hub.http.dashboard import Dashboard, add_dashboard_routes
from hub.http.dashboard_csv import METRIC_FIELDS
from hub.http.dashboard_view import TABLES
from hub.http.security import install_security_headers
from hub.kpi.model import Metrics, Period, Report, Slice

PASSWORD = "s3cret-pass-anna"
# Cheap argon2 parameters: the tests are about the flow, not the hash's cost.
FAST = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
ANNA_HASH = FAST.hash(PASSWORD)
TIMEZONE = "Europe/Berlin"


def sample_report(period: Period) -> Report:
    """A month of a small shop, with figures easy to find on the page."""
    days = []
    day = period.since
    i = 0
    while day <= period.until:
        conversations = 5 + (i * 7) % 11
        revenue = 0 if i % 6 == 5 else 2490 * (1 + i % 4) + 1000 * (i % 3)
        days.append(
            Slice(
                day.isoformat(),
                f"{day.day}.{day.month}.",
                Metrics(conversations=conversations, revenue=revenue, orders_paid=1 + i % 4),
            )
        )
        day += timedelta(days=1)
        i += 1
    total_conversations = sum(s.metrics.conversations for s in days)
    total_revenue = sum(s.metrics.revenue for s in days)
    totals = Metrics(
        conversations_new=total_conversations - 12,
        conversations=total_conversations,
        first_response_median=272.0,  # 4 min 32 s
        first_response_p90=1830.0,
        missed=7,
        links_sent=64,
        links_clicked=41,
        orders_created=48,
        orders_paid=37,
        revenue=total_revenue,
        average_order_value=total_revenue // 37,
        conversion=0.1834,
        conversion_with_link=0.578,
    )
    advisers = [
        Slice(
            "@anna:shop.example",
            "Anna Schmidt",
            Metrics(
                conversations=128,
                first_response_median=195.0,
                missed=2,
                links_sent=30,
                links_clicked=21,
                orders_paid=19,
                revenue=241_050,
                conversion=0.1484,
            ),
        ),
        Slice(
            "@ben:shop.example",
            "Ben Öztürk",
            Metrics(
                conversations=96,
                first_response_median=410.0,
                missed=4,
                links_sent=22,
                links_clicked=13,
                orders_paid=12,
                revenue=133_980,
                conversion=0.125,
            ),
        ),
        Slice(
            "@cleo:shop.example",
            "Cleo <Aushilfe>",  # markup in a display name stays text
            Metrics(conversations=31, first_response_median=3725.0, missed=1, revenue=18_900),
        ),
    ]
    channels = [
        Slice("whatsapp", "WhatsApp", Metrics(conversations=141, revenue=260_400, missed=3)),
        Slice("webchat", "Web-Chat", Metrics(conversations=77, revenue=98_030, missed=2)),
        Slice("instagram", "Instagram", Metrics(conversations=37, revenue=35_500, missed=2)),
    ]
    weeks = [
        Slice("2026-W45", "KW 45", Metrics(conversations=60, revenue=90_000)),
        Slice("2026-W46", "KW 46", Metrics(conversations=71, revenue=101_550)),
    ]
    heatmap = [[(0, 0)] * 24 for _ in range(7)]
    for weekday in range(6):
        for hour in range(9, 19):
            heatmap[weekday][hour] = (2 + (weekday * 3 + hour) % 9, 1 if hour == 18 else 0)
    heatmap[0][10] = (14, 2)  # Monday morning: the busiest hour
    heatmap[6][20] = (3, 3)  # Sunday evening: nobody there
    return Report(
        period=period,
        currency="EUR",
        totals=totals,
        by_day=days,
        by_week=weeks,
        by_adviser=advisers,
        by_channel=channels,
        heatmap=heatmap,
    )


class FakeClock:
    """Seconds for the limit on failed logins (time.monotonic() in the hub) and the same
    moment as a date-time for the sessions (the hub's clock): one knob moves both."""

    EPOCH = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return self.EPOCH + timedelta(seconds=self.now)


Client = TestClient[web.Request, web.Application]


async def login_token(client: Client) -> str:
    """The login form's CSRF token (its cookie goes into the client's jar)."""
    response = await client.get("/dashboard/login")
    assert response.status == 200
    match = re.search(r'name="csrf" value="([^"]+)"', await response.text())
    assert match is not None
    return match.group(1)


async def log_in(
    client: Client, username: str = "anna", password: str = PASSWORD, **headers: str
) -> Any:
    """Post the login form as a browser would: the response, not followed."""
    return await client.post(
        "/dashboard/login",
        data={"username": username, "password": password, "csrf": await login_token(client)},
        headers=headers,
        allow_redirects=False,
    )


class Site:
    def __init__(
        self,
        client: TestClient[web.Request, web.Application],
        dashboard: Dashboard,
        clock: FakeClock,
    ) -> None:
        self.client = client
        self.dashboard = dashboard
        self.clock = clock
        self.periods: list[Period] = []

    async def login_token(self) -> str:
        return await login_token(self.client)

    async def login(self, username: str = "anna", password: str = PASSWORD, **headers: str) -> Any:
        return await log_in(self.client, username, password, **headers)

    async def logged_in(self) -> str:
        response = await self.login()
        assert response.status == 303, await response.text()
        page = await (await self.client.get("/dashboard")).text()
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match is not None
        return match.group(1)


def make_dashboard(
    config: DashboardConfig, clock: FakeClock, periods: list[Period], db: Database
) -> Dashboard:
    async def report(period: Period) -> Report:
        periods.append(period)
        return sample_report(period)

    return Dashboard(
        config,
        report,
        shop_name="Farben & Co",
        locale="de_DE",
        timezone=TIMEZONE,
        db=db,
        trusted_proxies=[ip_network("127.0.0.1/32")],
        monotonic=clock,
        now=clock.wall,
    )


async def serve(dashboard: Dashboard) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    install_security_headers(app)
    dashboard.add_routes(app)
    # unsafe: the test server is 127.0.0.1, and aiohttp's jar ignores cookies of IP hosts.
    client = TestClient(TestServer(app, host="127.0.0.1"), cookie_jar=CookieJar(unsafe=True))
    await client.start_server()
    return client


def dashboard_config(**overrides: Any) -> DashboardConfig:
    values: dict[str, Any] = {
        "admins": [{"username": "anna", "password_hash": ANNA_HASH}],
        "secure_cookies": False,  # the test client speaks plain http
        "max_failed_logins": 3,
        "session_minutes": 30,
    }
    return DashboardConfig.model_validate(values | overrides)


@pytest.fixture
def backend() -> str:
    """The HTTP flow on SQLite; the store on both engines is test_dashboard_sessions.py's."""
    return "sqlite"


@pytest.fixture
async def site(db: Database) -> AsyncIterator[Site]:
    clock = FakeClock()
    periods: list[Period] = []
    dashboard = make_dashboard(dashboard_config(), clock, periods, db)
    client = await serve(dashboard)
    s = Site(client, dashboard, clock)
    s.periods = periods
    yield s
    await client.close()


def cookie_header(response: Any, name: str) -> str:
    for value in response.headers.getall("Set-Cookie", []):
        if value.startswith(name + "="):
            return str(value)
    raise AssertionError(f"no Set-Cookie for {name}")


# -- logging in and out --------------------------------------------------------------------


async def test_login_sets_a_strict_http_only_session_and_shows_the_overview(site: Site) -> None:
    response = await site.login()
    assert response.status == 303
    assert response.headers["Location"] == "/dashboard"
    cookie = cookie_header(response, "hub-dashboard")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # secure_cookies is off in this test
    assert "Max-Age" not in cookie  # the server ends the login, not the browser
    session_id = cookie.split(";")[0].split("=", 1)[1]
    assert len(session_id) == 43

    page = await site.client.get("/dashboard")
    assert page.status == 200
    html = await page.text()
    assert "Signed in as anna" in html
    assert 'data-testid="tile-revenue"' in html
    assert "Cleo &lt;Aushilfe&gt;" in html and "Cleo <Aushilfe>" not in html
    assert page.headers["Cache-Control"] == "no-store"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "http" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    # Logged in, the login page sends you on.
    again = await site.client.get("/dashboard/login", allow_redirects=False)
    assert again.status == 302 and again.headers["Location"] == "/dashboard"


@pytest.mark.parametrize(
    ("username", "password"),
    [("anna", "wrong-password"), ("nobody", PASSWORD), ("ANNA", PASSWORD), ("", "")],
    ids=["wrong-password", "unknown-user", "other-case", "empty"],
)
async def test_wrong_credentials_are_refused_alike(
    site: Site, username: str, password: str
) -> None:
    response = await site.login(username, password)
    assert response.status == 200
    html = await response.text()
    assert "Wrong username or password." in html
    assert not any(v.startswith("hub-dashboard=") for v in response.headers.getall("Set-Cookie"))
    assert (await site.client.get("/dashboard", allow_redirects=False)).status == 302


@pytest.mark.parametrize("csrf", [None, "", "x" * 43, "wrong"])
async def test_login_without_the_right_csrf_token_is_forbidden(
    site: Site, csrf: str | None
) -> None:
    await site.login_token()  # the browser has the login cookie
    data = {"username": "anna", "password": PASSWORD}
    if csrf is not None:
        data["csrf"] = csrf
    response = await site.client.post("/dashboard/login", data=data, allow_redirects=False)
    assert response.status == 403
    assert "This form has expired; reload the page." in await response.text()
    assert (await site.client.get("/dashboard", allow_redirects=False)).status == 302


async def test_login_without_the_csrf_cookie_is_forbidden(site: Site) -> None:
    token = await site.login_token()
    site.client.session.cookie_jar.clear()  # a form posted from elsewhere has no cookie
    response = await site.client.post(
        "/dashboard/login",
        data={"username": "anna", "password": PASSWORD, "csrf": token},
        allow_redirects=False,
    )
    assert response.status == 403


async def test_logout_needs_its_csrf_token_and_ends_the_session(site: Site) -> None:
    csrf = await site.logged_in()
    for data in ({}, {"csrf": "wrong"}):
        refused = await site.client.post("/dashboard/logout", data=data, allow_redirects=False)
        assert refused.status == 403
    assert (await site.client.get("/dashboard", allow_redirects=False)).status == 200

    session_id = site.client.session.cookie_jar.filter_cookies(site.client.make_url("/dashboard"))[
        "hub-dashboard"
    ].value
    response = await site.client.post(
        "/dashboard/logout", data={"csrf": csrf}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"] == "/dashboard/login?signed_out"
    assert "Max-Age=0" in cookie_header(response, "hub-dashboard")
    assert (await site.client.get("/dashboard", allow_redirects=False)).status == 302
    # The old id is dead on the server too, even if a browser kept it.
    replay = await site.client.get(
        "/dashboard", headers={"Cookie": f"hub-dashboard={session_id}"}, allow_redirects=False
    )
    assert replay.status == 302
    notice = await site.client.get("/dashboard/login?signed_out")
    assert "You have signed out." in await notice.text()


async def test_session_ends_after_session_minutes_without_a_request(site: Site) -> None:
    await site.logged_in()
    site.clock.now += 29 * 60
    assert (await site.client.get("/dashboard", allow_redirects=False)).status == 200
    site.clock.now += 29 * 60  # 29 minutes after the last request: still alive
    assert (await site.client.get("/dashboard", allow_redirects=False)).status == 200
    site.clock.now += 30 * 60 + 1
    response = await site.client.get("/dashboard", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/dashboard/login"


async def test_secure_cookies_use_the_host_prefix(db: Database) -> None:
    clock = FakeClock()
    dashboard = make_dashboard(dashboard_config(secure_cookies=True), clock, [], db)
    client = await serve(dashboard)
    try:
        page = await client.get("/dashboard/login")
        cookie = cookie_header(page, "__Host-hub-dashboard-login")
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert token is not None
        response = await client.post(
            "/dashboard/login",
            data={"username": "anna", "password": PASSWORD, "csrf": token.group(1)},
            headers={"Cookie": f"__Host-hub-dashboard-login={token.group(1)}"},
            allow_redirects=False,
        )
        assert response.status == 303
        session = cookie_header(response, "__Host-hub-dashboard")
        assert "Secure" in session and "Path=/" in session and "Domain" not in session
    finally:
        await client.close()


# -- failed logins -------------------------------------------------------------------------


async def test_failed_logins_per_address_are_limited(site: Site) -> None:
    for _ in range(3):
        assert (await site.login("anna", "wrong")).status == 200
    # Now even the right password is refused from this address, with a clear text.
    response = await site.login()
    assert response.status == 429
    assert int(response.headers["Retry-After"]) > 800
    assert "Too many failed sign-ins. Please try again in 15 minutes." in await response.text()
    # Another client behind the trusted proxy (127.0.0.1) is another address ...
    other = await site.login("anna", PASSWORD, **{"X-Forwarded-For": "203.0.113.9"})
    assert other.status == 429  # ... but anna's username has had 3 failures too.
    assert (await site.login("nobody", "x", **{"X-Forwarded-For": "203.0.113.9"})).status == 200
    site.clock.now += 15 * 60
    assert (await site.login()).status == 303


async def test_parallel_attempts_cannot_pass_the_limit_together(site: Site) -> None:
    token = await site.login_token()

    async def attempt(i: int) -> int:
        response = await site.client.post(
            "/dashboard/login",
            data={"username": "anna", "password": f"guess-{i}", "csrf": token},
            allow_redirects=False,
        )
        return response.status

    statuses = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert sorted(statuses) == [200] * 3 + [429] * 9


async def test_failed_logins_per_username_across_addresses(site: Site) -> None:
    for i in range(3):
        forwarded = {"X-Forwarded-For": f"198.51.100.{i}"}
        assert (await site.login("anna", "wrong", **forwarded)).status == 200
    response = await site.login("anna", PASSWORD, **{"X-Forwarded-For": "198.51.100.77"})
    assert response.status == 429
    # The proxy's own address is not blamed for its clients' failures.
    assert (await site.login("nobody", "x")).status == 200


# -- every URL needs a login ---------------------------------------------------------------

PAGES = [
    "/dashboard",
    "/dashboard/",
    "/dashboard?days=7",
    "/dashboard?since=2026-11-01&until=2026-11-30",
    "/dashboard/anything",
    "/dashboard/export",
    "/dashboard/export/by_adviser",
]
EXPORTS = [f"/dashboard/export/{table}.csv" for table in (*TABLES, "nonexistent")]


@pytest.mark.parametrize(
    "cookie", [None, "hub-dashboard=made-up", "hub-dashboard="], ids=["none", "forged", "empty"]
)
async def test_every_url_is_refused_without_a_login(site: Site, cookie: str | None) -> None:
    headers = {"Cookie": cookie} if cookie else {}
    for url in PAGES:
        response = await site.client.get(url, headers=headers, allow_redirects=False)
        assert response.status == 302, url
        assert response.headers["Location"] in ("/dashboard/login", "/dashboard"), url
        if url != "/dashboard/":
            assert response.headers["Location"] == "/dashboard/login", url
    for url in EXPORTS:
        for query in ("", "?days=7", "?since=2026-11-01&until=2026-11-30"):
            response = await site.client.get(url + query, headers=headers, allow_redirects=False)
            assert response.status == 401, url
            assert response.content_type == "text/plain", url  # no figures, no CSV
    response = await site.client.post(
        "/dashboard/logout", data={"csrf": "x"}, headers=headers, allow_redirects=False
    )
    assert response.status == 303 and response.headers["Location"] == "/dashboard/login"
    for method in ("PUT", "DELETE", "PATCH"):
        response = await site.client.request(
            method, "/dashboard", headers=headers, allow_redirects=False
        )
        assert response.status in (302, 405), (method, response.status)
    assert site.periods == []  # no report was ever computed for a stranger


async def test_an_expired_session_is_refused_everywhere(site: Site) -> None:
    await site.logged_in()
    site.clock.now += 31 * 60
    for url in PAGES:
        assert (await site.client.get(url, allow_redirects=False)).status == 302, url
    for url in EXPORTS:
        assert (await site.client.get(url, allow_redirects=False)).status == 401, url


async def test_static_files_are_the_only_public_ones(site: Site) -> None:
    for name, kind in [
        ("dashboard.css", "text/css"),
        ("dashboard.js", "text/javascript"),
        ("vendor/chartjs/chart.umd.min.js", "text/javascript"),
    ]:
        response = await site.client.get(f"/dashboard/static/{name}")
        assert response.status == 200, name
        assert response.content_type == kind
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("..%2Ftemplates%2Fdashboard.html", "vendor/chartjs/LICENSE.md", "widget.js"):
        response = await site.client.get(f"/dashboard/static/{name}", allow_redirects=False)
        assert response.status == 404, name
    # A plain ../ is resolved by the client: another dashboard URL, which wants a login.
    response = await site.client.get(
        "/dashboard/static/../templates/dashboard.html", allow_redirects=False
    )
    assert response.status == 302


# -- what a logged-in admin sees -----------------------------------------------------------


async def test_overview_shows_the_report_of_the_period_asked_for(
    site: Site, shop_language: Callable[[str], None]
) -> None:
    await site.logged_in()
    today = clock.now().astimezone(ZoneInfo(TIMEZONE)).date()
    site.periods.clear()
    html = await (await site.client.get("/dashboard?days=7")).text()
    assert site.periods == [Period(today - timedelta(days=6), today, TIMEZONE)]
    report = sample_report(site.periods[0])
    revenue = f"{report.totals.revenue / 100:,.2f}".replace(",", "X").replace(".", ",")
    assert revenue.replace("X", ".") + "\u00a0€" in html
    assert "4 min 32 s" in html  # the first response median (texts in English here)
    assert "18.3%" in html or "18,3\u00a0%" in html
    assert 'aria-current="page" data-testid="preset-7"' in html
    assert "export/by_adviser.csv?days=7" in html

    site.periods.clear()
    html = await (await site.client.get("/dashboard?since=2026-10-01&until=2026-10-31")).text()
    assert site.periods == [Period(date(2026, 10, 1), date(2026, 10, 31), TIMEZONE)]
    assert "since=2026-10-01&amp;until=2026-10-31" in html

    response = await site.client.get("/dashboard?since=2026-11-02&until=2026-11-01")
    assert response.status == 400
    assert "The first day must not be after the last day." in await response.text()


async def test_chart_data_is_json_in_a_data_block(site: Site) -> None:
    await site.logged_in()
    html = await (await site.client.get("/dashboard?days=30")).text()
    match = re.search(
        r'<script type="application/json" id="dashboard-data">(.*?)</script>', html, re.S
    )
    assert match is not None
    data = json.loads(match.group(1))
    report = sample_report(site.periods[-1])
    assert data["days"]["conversations"] == [s.metrics.conversations for s in report.by_day]
    assert data["days"]["revenue"] == [s.metrics.revenue / 100 for s in report.by_day]
    assert data["advisers"]["labels"] == ["Anna Schmidt", "Ben Öztürk", "Cleo <Aushilfe>"]
    assert "\\u003c" in match.group(1)  # "<" escaped: the block cannot be closed early
    # The only scripts are files of the hub.
    scripts = re.findall(r"<script([^>]*)>", html)
    assert all('src="/dashboard/static/' in s or "application/json" in s for s in scripts)


@pytest.mark.parametrize("table", TABLES)
async def test_csv_export_matches_the_report(site: Site, table: str) -> None:
    await site.logged_in()
    site.periods.clear()
    response = await site.client.get(
        f"/dashboard/export/{table}.csv?since=2026-11-01&until=2026-11-30"
    )
    assert response.status == 200
    assert response.content_type == "text/csv" and response.charset == "utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    assert (
        response.headers["Content-Disposition"]
        == f'attachment; filename="kpi-{table}-2026-11-01-2026-11-30.csv"'
    )
    period = Period(date(2026, 11, 1), date(2026, 11, 30), TIMEZONE)
    assert site.periods == [period]
    report = sample_report(period)
    rows = list(csv.DictReader(io.StringIO(await response.text())))

    def figures(metrics: Metrics) -> dict[str, str]:
        values = {name: getattr(metrics, name) for name in METRIC_FIELDS}
        return {k: "" if v is None else str(v) for k, v in values.items()}

    if table == "totals":
        assert rows == [
            {"since": "2026-11-01", "until": "2026-11-30", "currency": "EUR"}
            | figures(report.totals)
        ]
        assert rows[0]["revenue"] == str(report.totals.revenue)
    elif table == "heatmap":
        assert len(rows) == 7 * 24
        cells = {
            (r["weekday"], int(r["hour"])): (int(r["incoming"]), int(r["missed"])) for r in rows
        }
        assert cells[("Mon", 10)] == (14, 2) and cells[("Sun", 20)] == (3, 3)
        assert sum(i for i, _m in cells.values()) == sum(
            i for day in report.heatmap for i, _m in day
        )
    else:
        slices: list[Slice] = getattr(report, table)
        assert rows == [{"key": s.key, "label": s.label} | figures(s.metrics) for s in slices]


async def test_csv_refuses_a_bad_period(site: Site) -> None:
    await site.logged_in()
    response = await site.client.get("/dashboard/export/totals.csv?since=2026-11-31")
    assert response.status == 400
    response = await site.client.get("/dashboard/export/passwords.csv")
    assert response.status == 404


# -- the hub's wiring ------------------------------------------------------------------------


async def test_the_real_report_plugs_in(db: Any, tmp_path: Path) -> None:
    """add_dashboard_routes with the hub's config and database: the overview of an empty
    shop renders from hub.kpi.report, the CSV too."""
    config = Config.model_validate(
        {
            "data_dir": str(tmp_path),
            "homeserver": {"url": "http://127.0.0.1:9", "domain": "shop.example"},
            "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32},
            "shop": {"name": "Farben & Co", "locale": "de_DE", "timezone": TIMEZONE},
            "dashboard": {
                "admins": [{"username": "anna", "password_hash": ANNA_HASH}],
                "secure_cookies": False,
            },
        }
    )
    app = web.Application()
    install_security_headers(app)
    add_dashboard_routes(app, config, db)
    client = TestClient(TestServer(app, host="127.0.0.1"), cookie_jar=CookieJar(unsafe=True))
    await client.start_server()
    try:
        login = await log_in(client)
        assert login.status == 303
        overview = await client.get("/dashboard?days=7")
        assert overview.status == 200, await overview.text()
        assert 'data-testid="tile-revenue"' in await overview.text()
        export = await client.get("/dashboard/export/totals.csv?days=7")
        assert export.status == 200
        rows = list(csv.DictReader(io.StringIO(await export.text())))
        assert rows[0]["conversations"] == "0" and rows[0]["currency"] == "EUR"
    finally:
        await client.close()


def test_sample_report_is_consistent() -> None:
    period = Period(date(2026, 11, 1), date(2026, 11, 30), TIMEZONE)
    report = sample_report(period)
    assert len(report.by_day) == 30
    assert report.totals.revenue == sum(s.metrics.revenue for s in report.by_day)
    assert replace(report.totals).conversations == sum(
        s.metrics.conversations for s in report.by_day
    )
