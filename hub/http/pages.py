"""Pages the hub serves itself: the demo shop (embedding the widget) and a health check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
from aiohttp import web
from sqlalchemy import text

if TYPE_CHECKING:
    from hub.hub import Hub

WEB_DIR = Path(__file__).resolve().parents[2] / "web"


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        enable_async=True,
    )


def add_page_routes(app: web.Application, hub: Hub) -> None:
    env = templates()
    base = hub.config.http.public_base

    async def demo_shop(request: web.Request) -> web.Response:
        page = await env.get_template("demo_shop.html").render_async(
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
