"""The Channel protocol every messenger implements: web chat, WhatsApp, Telegram, Meta.

Each channel package has: a pure `mapping` module (provider payload ↔ hub types, no I/O), a
`client` (the provider's API: base URL from config, timeouts, bounded retries, errors
classified through the channel's error table) and a `channel` module implementing this
protocol, whose webhook handler verifies, parses with the mapping and hands the envelopes to
`hub.core.ingest` (one transaction), then acknowledges.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from aiohttp import web

from hub.core.types import MediaRef, OutboundMessage


@dataclass(frozen=True)
class Capabilities:
    media: bool = True
    buttons: bool = False
    edits: bool = False
    reactions: bool = False
    templates: bool = False


class Channel(Protocol):
    kind: str  # stored in channel_identities.channel, e.g. "webchat", "whatsapp"
    code: str  # short, in ghost localparts: "web", "wa", "tg", "fb", "ig"
    label: str  # shown to advisers in room names, e.g. "WhatsApp"
    capabilities: Capabilities
    # How long after the customer's last message free text may be sent; None = unlimited.
    reply_window: timedelta | None

    def add_routes(self, app: web.Application) -> None:
        """Register the channel's webhook or API routes."""

    async def send(self, message: OutboundMessage) -> str:
        """Deliver to the customer; return the remote message id. Raise ExternalError
        (e.g. permanent with a human reason when the reply window has closed)."""
        ...

    async def fetch_media(self, media: MediaRef) -> tuple[bytes, str]:
        """Download an inbound file by its `remote_id`: (bytes, mimetype)."""
        ...

    async def send_reaction(self, external_id: str, target_remote_id: str, emoji: str) -> None:
        """An adviser reacted to a customer's message ("" removes). Raise ExternalError."""

    async def status_changed(self, external_id: str, message_ids: list[int], status: str) -> None:
        """The customer's messages reached the shop ("delivered") or an adviser read them
        ("read"); channels that can show this to the customer do so."""
