"""The web-chat channel: the hub's own database is the "provider", websockets the push.

Sending to a visitor means marking the message visible (status "sent") and pushing it to
the visitor's open widgets; a widget that was offline catches up from its last seen id.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hub.bridges.base import Capabilities, Channel, ChannelDeps
from hub.bridges.webchat.limits import WidgetLimits
from hub.config import WebchatConfig
from hub.core.addresses import Network
from hub.core.ingest import Ingest
from hub.core.types import OutboundMessage
from hub.db import webchat
from hub.db.models import Message
from hub.errors import ExternalError
from hub.i18n import N_, _
from hub.matrix.client import MatrixClient

if TYPE_CHECKING:
    from hub.bridges.webchat.api import WebchatApi

log = logging.getLogger(__name__)

KIND = webchat.KIND


def message_json(msg: Message, public_base: str) -> dict[str, Any]:
    """The widget's view of a message (see web/static/widget.js). `buttons`: the reply
    buttons of the shop's message, `[{"id", "title"}]` (empty for every other message); a
    tap is posted back with the button's id (hub.bridges.webchat.api)."""
    media = None
    if msg.media and msg.media.get("media_id"):
        m = msg.media
        media = {
            "url": f"{public_base}/webchat/media/{m['media_id']}",
            "filename": m["filename"],
            "mimetype": m["mimetype"],
            "size": m["size"],
        }
    kind, text = msg.kind, msg.text
    if (msg.data or {}).get("deleted"):
        # A photo refused or withdrawn (hub.consent): the visitor sees that it is gone.
        kind, text = "text", _("🗑 Photo deleted")
    client_id = None
    if msg.direction == "in" and msg.remote_id and ":" in msg.remote_id:
        client_id = msg.remote_id.split(":", 1)[1]
    return {
        "id": msg.id,
        "direction": msg.direction,
        "kind": kind,
        "text": text,
        "media": media,
        "sender_name": msg.sender_name if msg.direction == "out" else None,
        "created_at": msg.created_at.isoformat(),
        "client_id": client_id,
        "status": msg.status,
        "buttons": webchat.buttons_of(msg.data) if msg.direction == "out" else [],
    }


class WebchatChannel(Channel):
    kind = KIND
    code = "web"
    label = N_("Web chat")  # shown with _() (hub.matrix.portal)
    # The widget shows a bot message's reply buttons under it; a tap comes back as an
    # "interactive" message (hub.bridges.webchat.api).
    capabilities = Capabilities(buttons=True)

    def __init__(
        self,
        deps: ChannelDeps,
        config: WebchatConfig,
        matrix: MatrixClient,
        ingest: Ingest,
        domain: str,
        *,
        trusted_proxies: Sequence[Network] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(deps)
        self.config = config
        self.matrix = matrix
        self.ingest = ingest
        self.domain = domain  # the homeserver's: the customer's ghost reads on their behalf
        # The widget API's rate limits (hub.bridges.webchat.limits), counted per client
        # address: X-Forwarded-For is believed from these reverse proxies only
        # (`http.trusted_proxies`). `limits.refused` counts the refusals per limit.
        self.trusted_proxies = tuple(trusted_proxies)
        self.limits = WidgetLimits.from_config(config.limits)
        self.clock = clock  # monotonic seconds, for the rate limits
        self.api: WebchatApi | None = None  # once the routes are added
        self.sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self._names: dict[str, str] = {}

    def add_routes(self, app: web.Application) -> None:
        from hub.bridges.webchat.api import WebchatApi

        self.api = WebchatApi(self)
        self.api.add_routes(app)

    async def send(self, message: OutboundMessage) -> str:
        name = await self._sender_name(message)
        row = await self.deps.db.write(webchat.shown_to_visitor, message.message_id, name)
        await self.push(message.external_id, message_json(row, self.deps.public_base))
        return f"out:{message.message_id}"

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
        """The adviser's display name, shown above their bubbles in the widget (the bot's
        messages carry the shop's name)."""
        mxid = message.sender_mxid
        if not mxid:
            return message.sender_name
        if mxid not in self._names:
            try:
                self._names[mxid] = await self.matrix.display_name(mxid) or mxid[1:].split(":")[0]
            except ExternalError:
                log.warning("webchat: no display name for %s", mxid)
                return mxid[1:].split(":")[0]
        return self._names[mxid]
