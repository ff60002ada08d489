"""The web-chat channel: the hub's own database is the "provider", websockets the push.

Sending to a visitor means marking the message visible (status "sent") and pushing it to
the visitor's open widgets; a widget that was offline catches up from its last seen id.
"""

from __future__ import annotations

import asyncio
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
from hub.db import outbound, webchat
from hub.db.messages import message_by_id
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
    tap is posted back with the button's id (hub.bridges.webchat.api). `formatted`: an
    adviser's formatting as a tree of allowed tags (hub.bridges.webchat.formatting), None
    for plain text; `edited`: an adviser changed it; `deleted`: it is gone, `text` says so;
    `reaction`: the shop's emoji on a customer's message, None without one."""
    from hub.bridges.webchat.formatting import formatted

    data = msg.data or {}
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
    # Only advisers' messages carry formatting; a customer's "<b>" stays the text they typed.
    rich = formatted(msg.html) if msg.direction == "out" and kind == "text" else None
    deleted = bool(data.get("deleted")) or msg.status == "deleted"
    if data.get("deleted"):
        # A photo refused or withdrawn (hub.consent): the visitor sees that it is gone.
        kind, text, media, rich = "text", _("🗑 Photo deleted"), None, None
    elif msg.status == "deleted":
        # An adviser deleted it in Matrix (hub.db.outbound.record_delete): nothing of it stays.
        kind, text, media, rich = "text", _("Message deleted"), None, None
    client_id = None
    if msg.direction == "in" and msg.remote_id and ":" in msg.remote_id:
        client_id = msg.remote_id.split(":", 1)[1]
    reaction = data.get("reaction") if msg.direction == "in" else None
    return {
        "id": msg.id,
        "direction": msg.direction,
        "kind": kind,
        "text": text,
        "formatted": rich,
        "media": media,
        "sender_name": msg.sender_name if msg.direction == "out" else None,
        "created_at": msg.created_at.isoformat(),
        "client_id": client_id,
        "status": msg.status,
        "buttons": webchat.buttons_of(msg.data) if msg.direction == "out" else [],
        "edited": bool(data.get("edited")) and not deleted,
        "deleted": deleted,
        "reaction": reaction if isinstance(reaction, str) and reaction else None,
    }


PUSH_TOPIC = "webchat.push"  # hub.db.bus: a frame for a visitor's widgets
SEND_TIMEOUT_SECONDS = 5


class WebchatChannel(Channel):
    kind = KIND
    code = "web"
    label = N_("Web chat")  # shown with _() (hub.matrix.portal)
    # The widget shows a bot message's reply buttons under it; a tap comes back as an
    # "interactive" message (hub.bridges.webchat.api). Advisers' edits, deletions and
    # reactions are pushed to the visitor's widgets ("message_edited", "message_deleted",
    # "reaction") and kept in the rows its history reads.
    capabilities = Capabilities(buttons=True, reactions=True, edits=True, deletes=True)

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
        deps.db.bus.subscribe(PUSH_TOPIC, self._push_here)
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

    async def edit_message(self, message: OutboundMessage, remote_id: str) -> None:
        """The new text to the open widgets; the row is rewritten when the job finishes
        (hub.db.outbound.record_edit), so a widget that reconnects later reads it."""
        row = await self.deps.db.read(message_by_id, message.message_id)
        if row is None:
            return
        row.text, row.html = message.text, message.html
        row.data = {**(row.data or {}), "edited": True}
        shown = message_json(row, self.deps.public_base)
        await self._broadcast(message.external_id, {"type": "message_edited", "message": shown})

    async def delete_message(self, external_id: str, remote_id: str, message_id: int) -> None:
        """Gone from the open widgets; the history leaves it out once its status says so."""
        await self._broadcast(external_id, {"type": "message_deleted", "id": message_id})

    async def send_reaction(self, external_id: str, target_remote_id: str, emoji: str) -> None:
        """The shop's reaction on the visitor's message ("" takes it back), kept in the
        message's `data.reaction` for widgets that load the history later."""
        message_id = await self.deps.db.write(outbound.set_reaction, KIND, target_remote_id, emoji)
        if message_id is None:
            return
        await self._broadcast(external_id, {"type": "reaction", "id": message_id, "emoji": emoji})

    async def _broadcast(self, visitor_id: str, doc: dict[str, Any]) -> None:
        """To the visitor's open widgets, whichever hub process holds their websocket: this
        one directly, the others through the database's bus (PostgreSQL NOTIFY)."""
        await self.deps.db.bus.publish(PUSH_TOPIC, {"visitor": visitor_id, "doc": doc})

    def forget_socket(self, visitor_id: str, ws: web.WebSocketResponse) -> None:
        """A widget went away; a visitor without one leaves no entry behind."""
        held = self.sockets.get(visitor_id)
        if held is not None:
            held.discard(ws)
            if not held:
                del self.sockets[visitor_id]

    async def _push_here(self, note: dict[str, Any]) -> None:
        visitor_id, doc = note.get("visitor"), note.get("doc")
        if not isinstance(visitor_id, str) or visitor_id not in self.sockets:
            return
        for ws in list(self.sockets[visitor_id]):
            try:
                # Bounded: frames from the other processes are pushed one after another,
                # and one widget that stopped reading must not hold up everyone's.
                await asyncio.wait_for(ws.send_json(doc), SEND_TIMEOUT_SECONDS)
            except (ConnectionError, RuntimeError, TimeoutError):
                self.forget_socket(visitor_id, ws)

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
