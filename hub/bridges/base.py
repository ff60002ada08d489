"""The Channel protocol every messenger implements (web chat now; WhatsApp, Telegram, Meta next).

A channel owns its HTTP surface (webhooks or, for the widget, its API), turns provider
payloads into `InboundMessage`s handed to the router, and sends `OutboundMessage`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from aiohttp import web

from hub.core.types import OutboundMessage


@dataclass(frozen=True)
class Capabilities:
    media: bool = True
    buttons: bool = False
    edits: bool = False
    reactions: bool = False


class ChannelError(Exception):
    """A channel refused or failed a send; `permanent` decides retry versus dead letter."""

    def __init__(self, human: str, *, permanent: bool, retry_after: float | None = None) -> None:
        super().__init__(human)
        self.human = human
        self.permanent = permanent
        self.retry_after = retry_after


class Channel(Protocol):
    kind: str  # stored in channel_identities.channel, e.g. "webchat", "whatsapp"
    label: str  # shown to advisers, e.g. "Web chat"
    capabilities: Capabilities
    # How long after the customer's last message free text may be sent; None = unlimited.
    reply_window: timedelta | None

    def add_routes(self, app: web.Application) -> None:
        """Register the channel's webhook or API routes."""

    async def send(self, message: OutboundMessage) -> str:
        """Deliver to the customer; return the remote message id. Raise ChannelError."""
        ...

    async def status_changed(self, external_id: str, message_ids: list[int], status: str) -> None:
        """The customer's messages reached the shop ("delivered") or an adviser read them
        ("read"); channels that can show this to the customer do so."""
