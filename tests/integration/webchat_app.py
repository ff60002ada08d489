"""The web chat's API in-process for tests (as tests/integration/test_webchat_api.py builds
it): an aiohttp test server with the channel's routes, a real database, a media store in a
temporary directory and a clock the test moves (the rate limits' monotonic seconds)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.bridges.base import ChannelDeps
from hub.bridges.webchat.channel import WebchatChannel
from hub.bridges.webchat.limits import WidgetLimits
from hub.config import WebchatConfig
from hub.core.addresses import Network
from hub.core.ingest import Ingest
from hub.core.media import MediaStore
from hub.db.database import Database
from hub.db.models import Conversation, MediaFile, Message, WebchatVisitor
from hub.matrix.client import MatrixClient

Sessions = async_sessionmaker[AsyncSession]
DOMAIN = "shop.example"
PUBLIC = "http://hub.test"


class Clock:
    """Monotonic seconds that move when the test says (or with time, `real=True`)."""

    def __init__(self, now: float = 1000.0, *, real: bool = False) -> None:
        self.now = now
        self.real = real

    def __call__(self) -> float:
        return time.monotonic() if self.real else self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class WebchatApp:
    client: TestClient[Any, Any]
    db: Database
    sessions: Sessions
    channel: WebchatChannel
    media_dir: Path
    clock: Clock

    async def count(self, model: type[Any]) -> int:
        async with self.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(model)) or 0)

    async def visitors(self) -> int:
        return await self.count(WebchatVisitor)

    async def messages(self) -> int:
        return await self.count(Message)

    async def conversations(self) -> int:
        return await self.count(Conversation)

    async def media_rows(self) -> set[str]:
        async with self.sessions() as s:
            return set(await s.scalars(select(MediaFile.id)))

    def media_files(self) -> set[str]:
        """Ids of the files in the media store (what a row may name)."""
        if not self.media_dir.exists():
            return set()
        return {p.name for p in self.media_dir.rglob("*") if p.is_file()}

    async def session(
        self, headers: dict[str, str] | None = None, **body: Any
    ) -> aiohttp.ClientResponse:
        resp = await self.client.post("/webchat/api/session", json=body, headers=headers)
        await resp.read()
        return resp

    async def visitor(self, headers: dict[str, str] | None = None) -> dict[str, str]:
        """A new visitor: the Authorization header (and the visitor id)."""
        resp = await self.session(headers)
        assert resp.status == 200, await resp.text()
        doc = await resp.json()
        return {"Authorization": f"Bearer {doc['token']}", "visitor_id": doc["visitor_id"]}

    async def say(
        self,
        who: dict[str, str],
        text: str = "Hallo",
        headers: dict[str, str] | None = None,
        **body: Any,
    ) -> aiohttp.ClientResponse:
        body.setdefault("client_id", uuid.uuid4().hex)
        resp = await self.client.post(
            "/webchat/api/messages",
            json={"text": text, **body},
            headers={"Authorization": who["Authorization"], **(headers or {})},
        )
        await resp.read()
        return resp

    async def upload(
        self,
        who: dict[str, str],
        client_id: str,
        data: bytes = b"%PDF-1.4 a file",
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        form = aiohttp.FormData()
        form.add_field("client_id", client_id)
        form.add_field("file", data, filename="offer.pdf", content_type="application/pdf")
        resp = await self.client.post(
            "/webchat/api/upload",
            data=form,
            headers={"Authorization": who["Authorization"], **(headers or {})},
        )
        await resp.read()
        return resp


async def _page(request: web.Request) -> web.Response:
    return web.Response(
        text='<!doctype html><html lang="en"><head><title>Shop</title></head><body>'
        '<script src="/webchat/widget.js" defer></script></body></html>',
        content_type="text/html",
    )


@asynccontextmanager
async def webchat_app(
    aiohttp_client: Any,
    db: Database,
    sessions: Sessions,
    tmp_path: Path,
    *,
    config: WebchatConfig | None = None,
    trusted_proxies: Sequence[Network] = (),
    client_max_size: int = 1024 * 1024,
    limits: WidgetLimits | None = None,
    clock: Clock | None = None,
    page: bool = False,
) -> AsyncIterator[WebchatApp]:
    """`limits`: instead of the config's; `clock`: a real one for a browser, which waits in
    real seconds; `page`: a page with the widget at /."""
    async with aiohttp.ClientSession() as http:
        media_dir = tmp_path / "media"
        deps = ChannelDeps(db, http, MediaStore(media_dir), PUBLIC)
        ingest = Ingest(db, ghost_prefix="customer_", domain=DOMAIN, shop_name="Farben Müller")
        # Never called: nothing here sends as an adviser.
        matrix = MatrixClient(http, "http://127.0.0.1:9", "as-token", f"@shopbot:{DOMAIN}")
        clock = clock or Clock()
        channel = WebchatChannel(
            deps,
            config or WebchatConfig(),
            matrix,
            ingest,
            DOMAIN,
            trusted_proxies=trusted_proxies,
            clock=clock,
        )
        if limits is not None:
            channel.limits = limits
        app = web.Application(client_max_size=client_max_size)
        channel.add_routes(app)
        if page:
            app.router.add_get("/", _page)
        client = await aiohttp_client(app)
        yield WebchatApp(client, db, sessions, channel, media_dir, clock)
