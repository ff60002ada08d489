"""Pages the hub serves itself: the demo shop (embedding the widget), the health check
(/healthz: the process answers) and the readiness check (/readyz: the database and the
homeserver answer too); the page renderer. The security headers of these and of every other
response are hub.http.security's, installed on the application with the pages' routes."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from hub import i18n
from hub.commerce.money import Money, format_money
from hub.db.database import Database, alive
from hub.http.security import install_security_headers, page_csp, page_headers

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
# Each check of /readyz gives up after this long (both run side by side): a probe with a
# timeout of 3 s or more gets its answer, and a slow homeserver counts as not ready.
READY_TIMEOUT_SECONDS = 2.0


def page_language() -> str:
    """The language the pages are written in, for <html lang>: the shop's when the hub has
    its texts, else English (the catalogues' fallback)."""
    language = i18n.current_locale().replace("-", "_").split("_", 1)[0].lower()
    return language if language in i18n.LANGUAGES else "en"


def templates() -> jinja2.Environment:
    """The templates' environment: `_()` and `ngettext()` in them are hub.i18n's (the shop's
    language at the moment a page is rendered); `page_language()` fills <html lang>."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        enable_async=True,
    )
    env.add_extension("jinja2.ext.i18n")
    # Old-style callables: the texts' {placeholders} are filled with str.format in the
    # template, like in Python (new-style would %-format every text).
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=i18n._, ngettext=i18n.ngettext, newstyle=False
    )
    env.globals["page_language"] = page_language
    return env


def demo_page_csp(public_base: str, nonce: str) -> str:
    """The demo shop's policy: its one inline script (by nonce), the widget script and the
    widget's API, websocket and media from the hub's public URL (the page may be opened under
    another name of the same hub), inline styles (the page's and the widget's)."""
    parts = urlsplit(public_base)
    origin = f"{parts.scheme}://{parts.netloc}"
    socket = ("wss" if parts.scheme == "https" else "ws") + f"://{parts.netloc}"
    return page_csp(
        script_src=("'self'", f"'nonce-{nonce}'", origin),
        style_inline=True,
        img_src=(origin, "blob:"),
        connect_src=(origin, socket),
    )


class Pages:
    """Renders web/templates. The Jinja environment is built on the first page asked for, so
    a hub nobody opens a page of never loads jinja2 (≈2 MiB resident)."""

    def __init__(self) -> None:
        self._env: jinja2.Environment | None = None

    async def render(self, name: str, **context: Any) -> str:
        if self._env is None:
            self._env = templates()
        return await self._env.get_template(name).render_async(**context)


def add_page_routes(
    app: web.Application, db: Database, *, shop_name: str, public_base: str, demo_page: bool
) -> None:
    install_security_headers(app)  # every response of the hub, not only these pages
    pages = Pages()

    def money(minor: int) -> str:
        # The demo shop's prices are euros, written the way the shop's locale writes them.
        return format_money(Money(minor, "EUR"), i18n.current_locale())

    async def demo_shop(request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        page = await pages.render(
            "demo_shop.html",
            shop_name=shop_name,
            widget_src=f"{public_base}/webchat/widget.js",
            hub_public_url=public_base,
            money=money,
            csp_nonce=nonce,
        )
        return web.Response(
            text=page,
            content_type="text/html",
            headers=page_headers(demo_page_csp(public_base, nonce)),
        )

    async def healthz(request: web.Request) -> web.Response:
        await db.read(alive)
        return web.json_response({"status": "ok"})

    if demo_page:
        app.router.add_get("/", demo_shop)
    app.router.add_get("/healthz", healthz)


class Readiness:
    """/readyz: 200 when the database answers a trivial query and the homeserver answers
    /_matrix/client/versions, each within `timeout`; else 503 with a JSON body naming what
    is not ready (`not_ready`) and, briefly, why. The reasons are words, never an
    exception's text: the route is public and the text would tell addresses and versions.
    A change between ready and not ready is logged once, not at every probe."""

    def __init__(
        self,
        db: Database,
        http: aiohttp.ClientSession,
        homeserver_url: str,
        timeout: float = READY_TIMEOUT_SECONDS,
    ) -> None:
        self.db = db
        self.http = http
        self.versions_url = homeserver_url.rstrip("/") + "/_matrix/client/versions"
        self.timeout = timeout
        self._was_ready: bool | None = None
        # One check at a time, its answer reused for a second: the route is public, and a
        # flood of probes must not become a flood of database reads and homeserver calls.
        self._check: asyncio.Task[dict[str, str]] | None = None
        self._checked_at = -1.0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/readyz", self.readyz)

    async def database(self) -> str | None:
        """None when ready, else why not."""
        try:
            await asyncio.wait_for(self.db.read(alive), self.timeout)
        except TimeoutError:
            return "timeout"
        except Exception as exc:
            log.debug("readyz: database: %r", exc)
            return "error"
        return None

    async def homeserver(self) -> str | None:
        try:
            async with self.http.get(
                self.versions_url,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                return None if resp.status == 200 else f"status {resp.status}"
        except TimeoutError:
            return "timeout"
        except aiohttp.ClientError as exc:
            log.debug("readyz: homeserver: %r", exc)
            return "unreachable"

    async def _problems(self) -> dict[str, str]:
        database, homeserver = await asyncio.gather(self.database(), self.homeserver())
        return {
            name: why
            for name, why in (("database", database), ("homeserver", homeserver))
            if why is not None
        }

    async def readyz(self, request: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        if self._check is None or (self._check.done() and now - self._checked_at >= 1.0):
            self._check = asyncio.ensure_future(self._problems())
            self._checked_at = now
        problems = await asyncio.shield(self._check)
        ready = not problems
        if ready != self._was_ready:
            if ready:
                log.info("readyz: ready")
            else:
                log.warning("readyz: not ready: %s", problems)
            self._was_ready = ready
        if ready:
            return web.json_response({"status": "ready"})
        return web.json_response(
            {"status": "not ready", "not_ready": sorted(problems), "problems": problems},
            status=503,
        )
