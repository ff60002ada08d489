"""The one way in: whatever a channel parsed (a webhook delivery, a widget message) is
stored by hub.db.inbound.store_events in one transaction with the jobs it causes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hub.core.text import storable_envelope
from hub.core.types import Envelope
from hub.db.database import Database
from hub.db.inbound import CustomerMessageHook, InboundPolicy, IngestResult, store_events

if TYPE_CHECKING:
    from hub.bridges.base import Channel

log = logging.getLogger(__name__)


class Ingest:
    def __init__(
        self,
        db: Database,
        *,
        ghost_prefix: str,
        domain: str,
        shop_name: str,
        after_message: tuple[CustomerMessageHook, ...] = (),
    ) -> None:
        self.db = db
        self._after_message = after_message
        self._ghost_prefix = ghost_prefix
        self._domain = domain
        self._shop_name = shop_name
        self._policies: dict[str, InboundPolicy] = {}

    def policy(self, channel: Channel) -> InboundPolicy:
        found = self._policies.get(channel.kind)
        if found is None:
            found = self._policies[channel.kind] = InboundPolicy(
                channel=channel.kind,
                code=channel.code,
                label=channel.label,
                ghost_prefix=self._ghost_prefix,
                domain=self._domain,
                shop_name=self._shop_name,
                looks_up_names=channel.looks_up_names,
                voice_note_reply=channel.voice_note_reply,
                start_greeting=channel.start_greeting,
                reply_window=channel.reply_window,
                after_message=self._after_message,
            )
        return found

    async def __call__(self, channel: Channel, envelopes: list[Envelope]) -> IngestResult:
        """Store a batch; someone waits for the answer (the provider, the widget)."""
        # Whatever a channel parsed is made storable here, once for every channel (lone
        # surrogates, NUL, over-long ids: hub.core.text).
        envelopes = [storable_envelope(e) for e in envelopes]
        result = await self.db.write(store_events, self.policy(channel), envelopes, urgent=True)
        if result.duplicates:
            log.info("%s: %d redelivered event(s) ignored", channel.kind, result.duplicates)
        return result
