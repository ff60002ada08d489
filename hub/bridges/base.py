"""The contract every messenger implements: web chat, WhatsApp, Telegram, Messenger,
Instagram. A new channel subclasses `Channel`; this file is the whole of what it must (and
may) provide. CONTRIBUTING.md has the checklist.

Each channel package has a pure `mapping` (provider payload <-> hub types, no I/O), an
`errors` table (provider errors -> ExternalError, pure), a `client` for the provider's API
and a `channel` module with the Channel subclass. Inbound, hub.bridges.webhooks runs the
same pipeline for every channel: whole body up to the cap -> `verify` -> `parse` -> store
(hub.core.ingest, one transaction) -> `acknowledgement`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
from aiohttp import web

from hub.core.media import MediaStore
from hub.core.types import MediaRef, OutboundMessage, Parsed
from hub.errors import ExternalError
from hub.i18n import _

if TYPE_CHECKING:
    from hub.core.commands import CommandSpec
    from hub.db.database import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capabilities:
    """What the sender may hand the channel (hub.bridges.sending). The dispatcher reads
    `edits`, `deletes` and `reactions` to tell the room, once per conversation, what the
    customer will not see: it never needs to know the channel itself."""

    buttons: bool = False  # reply buttons; without them the titles are added to the text
    reactions: bool = False  # advisers' reactions reach the customer (send_reaction)
    edits: bool = False  # an adviser's edit changes the sent message (edit_message)
    deletes: bool = False  # an adviser's redaction removes it for the customer (delete_message)


@dataclass(frozen=True)
class Refusal:
    """A webhook delivery refused: answered `status` with `text`; `log` says why."""

    status: int
    text: str
    log: str


@dataclass(frozen=True)
class ChannelDeps:
    """What every channel gets at construction (plus its own config section)."""

    db: Database
    http: aiohttp.ClientSession
    media: MediaStore
    public_base: str  # the hub's public URL


class Channel(ABC):
    # -- identity (class attributes) ------------------------------------------------------
    kind: ClassVar[str]  # stored in channel_identities.channel, e.g. "whatsapp"
    code: ClassVar[str]  # short, in ghost localparts: "web", "wa", "tg", "fb", "ig"
    # Shown to advisers in room names, e.g. "WhatsApp"; an English msgid (N_) where it is a
    # word to translate ("Web chat"): show it with _().
    label: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    # How long after the customer's last message free text may be sent; None = unlimited.
    reply_window: ClassVar[timedelta | None] = None
    # Where the provider posts webhooks; None for a channel without them (web chat).
    webhook_path: ClassVar[str | None] = None

    # -- optional behaviour (defaults: none) ----------------------------------------------
    looks_up_names: ClassVar[bool] = False  # fetch_display_name can tell a customer's name
    voice_note_reply: str | None = None  # sent once a day to a customer sending voice notes
    start_greeting: str | None = None  # the answer to the messenger's start command

    def __init__(self, deps: ChannelDeps) -> None:
        self.deps = deps

    # -- inbound: the webhook pipeline calls these in order -------------------------------

    def verify(self, raw: bytes, headers: Mapping[str, str]) -> Refusal | None:
        """Check the delivery is the provider's (signature, secret header), before anything
        else reads the body. Webhook channels must override this."""
        return Refusal(404, "no webhook", f"{self.kind}: webhook refused: the channel has none")

    def parse(self, doc: dict[str, Any]) -> Parsed | Refusal:
        """The delivery (a JSON object) as envelopes, by the pure mapping; a Refusal when it
        is not a delivery of this channel at all (another webhook object)."""
        return Parsed()

    def acknowledgement(self) -> web.Response:
        """The answer once the delivery is stored."""
        return web.json_response({"ok": True})

    async def after_store(self, parsed: Parsed) -> None:
        """Anything to tell the provider once the delivery is stored (parsed.acks)."""
        return None

    def subscription_challenge(self, query: Mapping[str, str]) -> web.Response | None:
        """The answer to a GET on the webhook path (Meta's verification handshake); None:
        the channel has no such GET."""
        return None

    # -- outbound --------------------------------------------------------------------------

    @abstractmethod
    async def send(self, message: OutboundMessage) -> str:
        """Deliver to the customer; return the remote message id. Raise ExternalError (e.g.
        permanent, code WINDOW_CLOSED, when the reply window has closed)."""

    async def fetch_media(self, media: MediaRef) -> tuple[bytes, str]:
        """Download an inbound file by its `remote_id`: (bytes, mimetype)."""
        raise ExternalError(
            _("{channel} has no files to fetch").format(channel=_(self.label)), permanent=True
        )

    async def send_reaction(self, external_id: str, target_remote_id: str, emoji: str) -> None:
        """An adviser reacted to a customer's message ("" removes); called only when
        `capabilities.reactions`. Raise ExternalError."""
        return None

    async def edit_message(self, message: OutboundMessage, remote_id: str) -> None:
        """Show the customer `message` (the new text of the message sent as `remote_id`)
        instead of the first version; called only when `capabilities.edits`. Raise
        ExternalError."""
        return None

    async def delete_message(self, external_id: str, remote_id: str, message_id: int) -> None:
        """Remove the message sent as `remote_id` (the hub's `message_id`) from the
        customer's chat; called only when `capabilities.deletes`. Raise ExternalError."""
        return None

    async def status_changed(self, external_id: str, message_ids: list[int], status: str) -> None:
        """The customer's messages reached the shop ("delivered") or an adviser read them
        ("read"); channels that can show this to the customer do so."""
        return None

    async def fetch_display_name(self, external_id: str) -> str | None:
        """The customer's name, asked by a job after their first message when the webhook
        carried none (`looks_up_names`)."""
        return None

    # -- lifecycle ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Routes beyond the webhook (web chat's API)."""
        return None

    async def on_start(self) -> None:
        """Work once the hub listens (Telegram's setWebhook). Failures are logged."""
        return None

    def commands(self) -> list[CommandSpec[Any]]:
        """Bot commands of this channel (WhatsApp's !template)."""
        return []

    async def close(self) -> None:
        """Release what the channel holds at shutdown."""
        return None


class Channels(dict[str, Channel]):
    """The enabled channels by kind."""

    def channel(self, kind: str) -> Channel:
        try:
            return self[kind]
        except KeyError:
            raise LookupError(f"channel {kind!r} is not enabled in this hub") from None
