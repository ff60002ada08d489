"""Pages the hub serves itself: the demo shop (embedding the widget) and a health check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import text

if TYPE_CHECKING:
    import jinja2

    from hub.hub import Hub

WEB_DIR = Path(__file__).resolve().parents[2] / "web"


def templates() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        enable_async=True,
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


def add_page_routes(app: web.Application, hub: Hub) -> None:
    pages = Pages()
    base = hub.config.http.public_base

    async def demo_shop(request: web.Request) -> web.Response:
        page = await pages.render(
            "demo_shop.html",
            shop_name=hub.config.shop.name,
            widget_src=f"{base}/webchat/widget.js",
            hub_public_url=base,
        )
        return web.Response(text=page, content_type="text/html")

    async def healthz(request: web.Request) -> web.Response:
        async with hub.sessions() as s:
            await s.execute(text("SELECT 1"))
        return web.json_response({"status": "ok"})

    if hub.config.channels.webchat.enabled and hub.config.channels.webchat.demo_page:
        app.router.add_get("/", demo_shop)
    app.router.add_get("/healthz", healthz)
