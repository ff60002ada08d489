"""Read receipts across the bridge: advisers reading customers' messages, and back."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.outbox import AfterCommit, Finish, Job, enqueue
from hub.db import repo
from hub.db.models import ChannelIdentity, Conversation, Message

if TYPE_CHECKING:
    from hub.hub import Hub

log = logging.getLogger(__name__)

SEND_RECEIPT = "matrix.receipt_out"


def read_event_ids(content: dict[str, object], is_own: object) -> list[str]:
    """Event ids an m.receipt EDU marks as read by someone other than the hub's own users."""
    found: list[str] = []
    for event_id, kinds in content.items():
        if not isinstance(kinds, dict):
            continue
        readers = kinds.get("m.read")
        if isinstance(readers, dict) and any(not is_own(u) for u in readers):  # type: ignore[operator]
            found.append(event_id)
    return found


class Receipts:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def adviser_read(self, job: Job) -> Finish | None:
        """matrix.receipt_in: an adviser read up to an event; the customer may see "read"."""
        event_ids = read_event_ids(job.payload.get("content", {}), self.hub.portals.is_own)
        if not event_ids:
            return None

        async def finish(s: AsyncSession) -> AfterCommit:
            changed: list[tuple[str, str, list[int]]] = []
            targets = [m for e in event_ids if (m := await repo.message_by_event_id(s, e))]
            for target in targets:
                _, identity = await repo.conversation_with_identity(s, target.conversation_id)
                rows = await repo.advance_status(
                    s, target.conversation_id, "in", target.id, ("received", "delivered"), "read"
                )
                if rows and identity.channel in self.hub.channels:
                    changed.append((identity.channel, identity.external_id, [r.id for r in rows]))

            async def notify() -> None:
                # Only once committed: a widget told "read" may read its history at once.
                for channel, external_id, ids in changed:
                    await self.hub.channels[channel].status_changed(external_id, ids, "read")

            return notify

        return finish

    async def customer_read(self, s: AsyncSession, conversation_id: int, up_to_id: int) -> bool:
        """The customer saw the shop's messages up to an id: mark them and queue a receipt
        from their ghost, so advisers see it in their client. True if anything changed."""
        rows = await repo.advance_status(
            s, conversation_id, "out", up_to_id, ("sent", "delivered"), "read"
        )
        latest = max((r for r in rows if r.matrix_event_id), key=lambda r: r.id, default=None)
        if latest is not None:
            conversation = await s.get(Conversation, conversation_id)
            assert conversation is not None
            await self.queue_ghost_receipt(s, conversation, latest)
        return bool(rows)

    async def queue_ghost_receipt(
        self, s: AsyncSession, conversation: Conversation, message: Message
    ) -> None:
        """A read receipt from the customer's ghost on a shop message (needs a room)."""
        if not conversation.room_id or not message.matrix_event_id:
            return
        identity = await s.get(ChannelIdentity, conversation.identity_id)
        assert identity is not None
        await enqueue(
            s,
            SEND_RECEIPT,
            f"receipt:{conversation.room_id}",
            {
                "room_id": conversation.room_id,
                "event_id": message.matrix_event_id,
                "as_user": self.hub.portals.ghost_mxid(identity),
            },
            f"receipt:{message.matrix_event_id}",
        )

    async def send(self, job: Job) -> Finish | None:
        """matrix.receipt_out: the ghost's read receipt on an adviser's message."""
        p = job.payload
        await self.hub.matrix.send_receipt(p["room_id"], p["event_id"], p["as_user"])
        return None
