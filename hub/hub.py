"""The Hub: every long-lived service, assembled once at start and passed down explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.config import Config
from hub.core.commands import CommandRegistry
from hub.core.media import MediaStore
from hub.core.outbox import OutboxWorker
from hub.matrix.client import MatrixClient
from hub.matrix.portal import Portals

if TYPE_CHECKING:
    from hub.bridges.base import Channel
    from hub.commerce.checkout import Checkout
    from hub.commerce.service import Shop
    from hub.core.bot import CommandHandler
    from hub.core.group_commit import GroupCommit
    from hub.matrix.receipts import Receipts


@dataclass
class Hub:
    config: Config
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    http: aiohttp.ClientSession
    matrix: MatrixClient
    portals: Portals
    worker: OutboxWorker
    media: MediaStore
    commands: CommandRegistry[CommandHandler] = field(default_factory=CommandRegistry)
    channels: dict[str, Channel] = field(default_factory=dict)
    receipts: Receipts = field(init=False)
    shop: Shop = field(init=False)
    checkout: Checkout = field(init=False)
    # Webhook batches stored together (hub.core.ingest); made on first use.
    ingest_commit: GroupCommit[Any, Any] | None = None

    def channel(self, kind: str) -> Channel:
        try:
            return self.channels[kind]
        except KeyError:
            raise LookupError(f"channel {kind!r} is not enabled in this hub") from None
