"""Pages the hub serves itself: the demo shop (embedding the widget) and a health check;
the page renderer and the security headers every page carries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hub.db.database import Database, alive

if TYPE_CHECKING:
    import jinja2

WEB_DIR = Path(__file__).resolve().parents[2] / "web"


def templates() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        enable_async=True,
    )


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

    async def demo_shop(request: web.Request) -> web.Response:
        page = await pages.render(
            "demo_shop.html",
            shop_name=shop_name,
            widget_src=f"{public_base}/webchat/widget.js",
            hub_public_url=public_base,
        )
        return web.Response(text=page, content_type="text/html")

    async def healthz(request: web.Request) -> web.Response:
        await db.read(alive)
        return web.json_response({"status": "ok"})

    if demo_page:
        app.router.add_get("/", demo_shop)
    app.router.add_get("/healthz", healthz)
