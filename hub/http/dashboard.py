"""The admin dashboard at /dashboard: the shop's KPIs for the admins of `dashboard.admins`
(served only when that list is not empty; hub.app adds the routes).

    GET  /dashboard                          the overview (?days=7|30|90 or ?since=&until=)
    GET  /dashboard/export/<table>.csv       one table of the same report as CSV
    GET  /dashboard/login, POST /dashboard/login, POST /dashboard/logout
    GET  /dashboard/static/<file>            its stylesheet, script and chart library

Every page and every CSV needs a login: a page without one redirects to the login form, a
CSV answers 401; the static files are public (the login page needs its stylesheet; they are
the repository's files and carry no data). Logins, CSRF tokens and the limit on failed
logins are hub.http.dashboard_auth's; what the overview shows is hub.http.dashboard_view's.
The logins are kept in the database: several hub processes behind one proxy each accept
the logins made on any of them.

The pages are server-rendered (jinja2) under a strict policy: scripts and styles from the
hub only, no inline script or style; the charts' data is a JSON block that dashboard.js reads
and draws with the vendored Chart.js (web/static/vendor/chartjs). Nothing is cached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import web

from hub.config.dashboard import DashboardConfig
from hub.core import clock
from hub.core.addresses import Network, client_address
from hub.http.dashboard_auth import (
    LoginLimiter,
    Passwords,
    Session,
    Sessions,
    new_token,
    same_token,
)
from hub.http.dashboard_csv import report_csv
from hub.http.dashboard_view import PRESETS, TABLES, Choice, PeriodError, choose_period, overview
from hub.http.dashboard_view import period_query as export_query
from hub.http.pages import WEB_DIR, Pages
from hub.http.security import page_csp, page_headers
from hub.i18n import _
from hub.kpi.model import Period, Report

if TYPE_CHECKING:
    from hub.config import Config
    from hub.db.database import Database

log = logging.getLogger(__name__)

ReportSource = Callable[[Period], Awaitable[Report]]

LOGIN_URL = "/dashboard/login"
HOME_URL = "/dashboard"
STATIC = {
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "vendor/chartjs/chart.umd.min.js": (
        "vendor/chartjs/chart.umd.min.js",
        "text/javascript; charset=utf-8",
    ),
}
NO_STORE = {"Cache-Control": "no-store"}


def dashboard_headers() -> dict[str, str]:
    """The pages' headers: the hub's page policy as it is (scripts, styles, images from the
    hub only; nothing inline), and never cached: they show figures of the shop."""
    return page_headers(page_csp()) | NO_STORE


class Dashboard:
    def __init__(
        self,
        config: DashboardConfig,
        report: ReportSource,
        *,
        shop_name: str,
        locale: str,
        timezone: str,
        db: Database,
        trusted_proxies: Sequence[Network] = (),
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self.config = config
        self.report = report
        self.shop_name = shop_name
        self.locale = locale
        self.timezone = timezone
        self.proxies = list(trusted_proxies)
        self.monotonic = monotonic  # the limit on failed logins (this process's)
        self.now = now  # the sessions' times (stored: every process's)
        self.passwords = Passwords({a.username: a.password_hash for a in config.admins})
        self.admin_names = frozenset(a.username for a in config.admins)
        self.sessions = Sessions(db, config.session_minutes)
        self.limiter = LoginLimiter(config.max_failed_logins)
        self.pages = Pages()
        # __Host-: the browser keeps the cookie to this host and path /, over HTTPS only;
        # without secure_cookies (plain http on loopback) the prefix is not allowed.
        prefix = "__Host-" if config.secure_cookies else ""
        self.session_cookie = f"{prefix}hub-dashboard"
        self.login_cookie = f"{prefix}hub-dashboard-login"

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(HOME_URL, self.home)
        r.add_get(HOME_URL + "/", self.slash)
        r.add_get(LOGIN_URL, self.login_form)
        r.add_post(LOGIN_URL, self.login)
        r.add_post("/dashboard/logout", self.logout)
        r.add_get("/dashboard/export/{table}.csv", self.export)
        r.add_get("/dashboard/static/{name:.+}", self.static)
        # Last: any other dashboard URL asks for a login first, then does not exist.
        r.add_route("*", "/dashboard/{tail:.*}", self.unknown)

    # -- sessions ------------------------------------------------------------------------

    async def _session(self, request: web.Request) -> Session | None:
        session = await self.sessions.get(request.cookies.get(self.session_cookie), self.now())
        if session is not None and session.username not in self.admin_names:
            # Logins outlive restarts now (they are in the database): an admin taken out of
            # dashboard.admins must not stay signed in.
            await self.sessions.drop(session.id)
            log.warning("dashboard login of %s ended: no longer an admin", session.username)
            return None
        return session

    def _to_login(self) -> web.HTTPFound:
        return web.HTTPFound(LOGIN_URL, headers=NO_STORE)

    def _set_cookie(self, response: web.StreamResponse, name: str, value: str) -> None:
        # No Max-Age: the server ends the login; the browser forgets it when it closes.
        response.set_cookie(
            name,
            value,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.config.secure_cookies,
        )

    def _del_cookie(self, response: web.StreamResponse, name: str) -> None:
        # A __Host- cookie is only replaced by one with the same attributes.
        response.del_cookie(
            name, path="/", secure=self.config.secure_cookies, httponly=True, samesite="Strict"
        )

    def _address(self, request: web.Request) -> str:
        return client_address(request.remote, request.headers.get("X-Forwarded-For"), self.proxies)

    def _today(self) -> date:
        return clock.now().astimezone(ZoneInfo(self.timezone)).date()

    async def _page(self, name: str, status: int = 200, **values: Any) -> web.Response:
        page = await self.pages.render(name, shop_name=self.shop_name, **values)
        return web.Response(
            text=page, status=status, content_type="text/html", headers=dashboard_headers()
        )

    # -- login and logout ----------------------------------------------------------------

    async def _login_page(
        self,
        request: web.Request,
        *,
        status: int = 200,
        username: str = "",
        message: str | None = None,
        kind: str = "error",
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        # Double submit: the form's token is the cookie's. A cookie the browser already has
        # is kept, so two open login tabs both work.
        token = request.cookies.get(self.login_cookie, "")
        if len(token) != 43:
            token = new_token()
        response = await self._page(
            "dashboard_login.html",
            status=status,
            user=None,
            csrf=token,
            username=username,
            message=message,
            message_kind=kind,
        )
        response.headers.update(headers or {})
        self._set_cookie(response, self.login_cookie, token)
        return response

    async def login_form(self, request: web.Request) -> web.Response:
        if await self._session(request) is not None:
            raise web.HTTPFound(HOME_URL, headers=NO_STORE)
        notice = _("You have signed out.") if "signed_out" in request.query else None
        return await self._login_page(request, message=notice, kind="notice")

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        username = str(form.get("username", ""))[:64].strip()
        password = str(form.get("password", ""))
        cookie = request.cookies.get(self.login_cookie, "")
        if not cookie or not same_token(str(form.get("csrf", "")), cookie):
            log.warning(
                "dashboard login from %s without a valid CSRF token", self._address(request)
            )
            return await self._login_page(
                request,
                status=403,
                username=username,
                message=_("This form has expired; reload the page."),
            )
        address = self._address(request)
        now = self.monotonic()
        wait = self.limiter.retry_after(address, username, now)
        if wait is not None:
            minutes = max(1, -(-int(wait) // 60))
            log.warning(
                "dashboard login for %r from %s refused: too many failures", username, address
            )
            return await self._login_page(
                request,
                status=429,
                username=username,
                message=_(
                    "Too many failed sign-ins. Please try again in {minutes} minutes."
                ).format(minutes=minutes),
                headers={"Retry-After": str(max(1, int(wait) + 1))},
            )
        # Counted as a failure before the (slow) check and taken back if it was right:
        # parallel attempts cannot all pass the limit while the first ones are checked.
        self.limiter.failed(address, username, now)
        if not await self.passwords.verify(username, password):
            log.warning("dashboard login for %r from %s failed", username, address)
            return await self._login_page(
                request,
                username=username,
                message=_("Wrong username or password."),
            )
        self.limiter.succeeded(address, username, now)
        # The expired logins of every process are deleted meanwhile (hub.db.dashboard).
        session = await self.sessions.create(username, self.now())
        log.info("dashboard: %s signed in from %s", username, address)
        response = web.HTTPSeeOther(HOME_URL, headers=NO_STORE)
        self._set_cookie(response, self.session_cookie, session.id)
        self._del_cookie(response, self.login_cookie)
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        session = await self._session(request)
        if session is None:
            raise web.HTTPSeeOther(LOGIN_URL, headers=NO_STORE)
        form = await request.post()
        if not same_token(str(form.get("csrf", "")), session.csrf):
            log.warning("dashboard logout of %s without a valid CSRF token", session.username)
            raise web.HTTPForbidden(text=_("This form has expired; reload the page."))
        await self.sessions.drop(session.id)
        response = web.HTTPSeeOther(LOGIN_URL + "?signed_out", headers=NO_STORE)
        self._del_cookie(response, self.session_cookie)
        raise response

    # -- pages ---------------------------------------------------------------------------

    async def slash(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(HOME_URL, headers=NO_STORE)

    def _choice(self, request: web.Request) -> Choice:
        return choose_period(request.query, self._today(), self.timezone)

    async def home(self, request: web.Request) -> web.Response:
        session = await self._session(request)
        if session is None:
            raise self._to_login()
        error = None
        status = 200
        try:
            choice = self._choice(request)
        except PeriodError as exc:
            # The page still shows something useful: the default period, with the reason.
            error, status = str(exc), 400
            choice = choose_period({}, self._today(), self.timezone)
        report = await self.report(choice.period)
        return await self._page(
            "dashboard.html",
            status=status,
            user=session.username,
            logout_csrf=session.csrf,
            error=error,
            days=choice.days,
            presets=PRESETS,
            export_query=export_query(choice),
            **overview(report, self.locale),
        )

    async def export(self, request: web.Request) -> web.Response:
        if await self._session(request) is None:
            raise web.HTTPUnauthorized(text=_("Please sign in to the dashboard."), headers=NO_STORE)
        table = request.match_info["table"]
        if table not in TABLES:
            raise web.HTTPNotFound()
        try:
            choice = self._choice(request)
        except PeriodError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        report = await self.report(choice.period)
        period = choice.period
        filename = f"kpi-{table}-{period.since.isoformat()}-{period.until.isoformat()}.csv"
        return web.Response(
            text=report_csv(report, table),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'} | NO_STORE,
        )

    async def static(self, request: web.Request) -> web.StreamResponse:
        entry = STATIC.get(request.match_info["name"])
        if entry is None:
            raise web.HTTPNotFound()
        path, content_type = entry
        return web.FileResponse(
            WEB_DIR / "static" / path,
            headers={"Content-Type": content_type, "Cache-Control": "no-cache"},
        )

    async def unknown(self, request: web.Request) -> web.Response:
        if await self._session(request) is None:
            raise self._to_login()
        raise web.HTTPNotFound()


def kpi_reports(db: Database, config: Config, holidays: Mapping[date, str] | None) -> ReportSource:
    """The reports of the hub's own rows (hub.kpi.report), public holidays counted closed."""
    from hub.kpi.report import build

    async def report(period: Period) -> Report:
        return await build(db, config, period, holidays)

    return report


def add_dashboard_routes(
    app: web.Application,
    config: Config,
    db: Database,
    holidays: Mapping[date, str] | None = None,
    *,
    report: ReportSource | None = None,
) -> Dashboard:
    """The dashboard of the hub's config on `app` (hub.app adds it when admins are set)."""
    dashboard = Dashboard(
        config.dashboard,
        report or kpi_reports(db, config, holidays),
        shop_name=config.shop.name,
        locale=config.shop.locale,
        timezone=config.shop.timezone,
        db=db,
        trusted_proxies=config.http.trusted_proxies,
    )
    dashboard.add_routes(app)
    return dashboard
