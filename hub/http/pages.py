"""Pages the hub serves itself: the demo shop (embedding the widget) and a health check;
the page renderer and the security headers every page carries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hub import i18n
from hub.commerce.money import Money, format_money
from hub.db.database import Database, alive

if TYPE_CHECKING:
    import jinja2

WEB_DIR = Path(__file__).resolve().parents[2] / "web"


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


def secure_headers(*, style_inline: bool = False, script_src: str = "'self'") -> dict[str, str]:
    """Headers of every HTML page: nothing loads from elsewhere, no framing, no sniffing."""
    style = "'self' 'unsafe-inline'" if style_inline else "'self'"
    return {
        "Content-Security-Policy": f"default-src 'self'; script-src {script_src}; "
        f"style-src {style}; frame-ancestors 'none'",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


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
    pages = Pages()

    def money(minor: int) -> str:
        # The demo shop's prices are euros, written the way the shop's locale writes them.
        return format_money(Money(minor, "EUR"), i18n.current_locale())

    async def demo_shop(request: web.Request) -> web.Response:
        page = await pages.render(
            "demo_shop.html",
            shop_name=shop_name,
            widget_src=f"{public_base}/webchat/widget.js",
            hub_public_url=public_base,
            money=money,
        )
        return web.Response(text=page, content_type="text/html")

    async def healthz(request: web.Request) -> web.Response:
        await db.read(alive)
        return web.json_response({"status": "ok"})

    if demo_page:
        app.router.add_get("/", demo_shop)
    app.router.add_get("/healthz", healthz)
