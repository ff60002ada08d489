"""The web-chat channel: the hub's own database is the "provider", websockets the push.

Sending to a visitor means marking the message visible (status "sent") and pushing it to
the visitor's open widgets; a widget that was offline catches up from its last seen id.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import update

from hub.bridges.base import Capabilities
from hub.core.types import MediaRef, OutboundMessage
from hub.db.models import Message
from hub.errors import ExternalError

if TYPE_CHECKING:
    from hub.hub import Hub

log = logging.getLogger(__name__)

KIND = "webchat"


def message_json(msg: Message, public_base: str) -> dict[str, Any]:
    """The widget's view of a message (see web/static/widget.js)."""
    media = None
    if msg.media and msg.media.get("media_id"):
        m = msg.media
        media = {
            "url": f"{public_base}/webchat/media/{m['media_id']}",
            "filename": m["filename"],
            "mimetype": m["mimetype"],
            "size": m["size"],
        }
    client_id = None
    if msg.direction == "in" and msg.remote_id and ":" in msg.remote_id:
        client_id = msg.remote_id.split(":", 1)[1]
    return {
        "id": msg.id,
        "direction": msg.direction,
        "kind": msg.kind,
        "text": msg.text,
        "media": media,
        "sender_name": msg.sender_name if msg.direction == "out" else None,
        "created_at": msg.created_at.isoformat(),
        "client_id": client_id,
        "status": msg.status,
    }


class WebchatChannel:
    kind = KIND
    code = "web"
    label = "Web chat"
    capabilities = Capabilities(media=True)
    reply_window: timedelta | None = None

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self._names: dict[str, str] = {}

    def add_routes(self, app: web.Application) -> None:
        from hub.bridges.webchat.api import WebchatApi

        WebchatApi(self.hub, self).add_routes(app)

    async def send(self, message: OutboundMessage) -> str:
        name = await self._sender_name(message)
        async with self.hub.sessions.begin() as s:
            await s.execute(
                update(Message)
                .where(Message.id == message.message_id)
                .values(status="sent", sender_name=name, remote_id=f"out:{message.message_id}")
            )
            row = await s.get(Message, message.message_id)
            assert row is not None
            payload = message_json(row, self.hub.config.http.public_base)
        await self.push(message.external_id, payload)
        return f"out:{message.message_id}"

    async def fetch_media(self, media: MediaRef) -> tuple[bytes, str]:
        # Widget uploads are stored at once; there is never a remote file to fetch.
        raise ExternalError("web chat media is stored on upload", permanent=True)

    async def send_reaction(self, external_id: str, target_remote_id: str, emoji: str) -> None:
        return None  # the widget does not show reactions (yet)

    async def push(self, visitor_id: str, message: dict[str, Any]) -> None:
        await self._broadcast(visitor_id, {"type": "message", "message": message})

    async def status_changed(self, external_id: str, message_ids: list[int], status: str) -> None:
        await self._broadcast(external_id, {"type": "status", "ids": message_ids, "status": status})

    async def _broadcast(self, visitor_id: str, doc: dict[str, Any]) -> None:
        for ws in list(self.sockets.get(visitor_id, ())):
            try:
                await ws.send_json(doc)
            except (ConnectionError, RuntimeError):
                self.sockets[visitor_id].discard(ws)

    async def _sender_name(self, message: OutboundMessage) -> str | None:
        """The adviser's display name, shown above their bubbles in the widget."""
        mxid = message.sender_mxid
        if not mxid:
            return None
        if mxid not in self._names:
            try:
                doc = await self.hub.matrix.request(
                    "GET", f"/_matrix/client/v3/profile/{quote(mxid)}/displayname"
                )
                self._names[mxid] = str(doc.get("displayname") or mxid[1:].split(":")[0])
            except Exception:
                log.warning("webchat: no display name for %s", mxid)
                return mxid[1:].split(":")[0]
        return self._names[mxid]
