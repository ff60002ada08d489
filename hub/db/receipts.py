"""Read receipts across the bridge, as units of work: advisers reading customers' messages,
and customers reading the shop's (shown to advisers as a receipt of the customer's ghost)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from hub.db.conversations import (
    conversation_of,
    conversation_with_identity,
    message_by_event_id,
)
from hub.db.jobs import enqueue, receipt_key
from hub.db.models import ChannelIdentity, Conversation, Message
from hub.jobs.kinds import MATRIX_RECEIPT_OUT

if TYPE_CHECKING:
    from hub.db.database import Tx


def advance_status(
    tx: Tx,
    conversation_id: int,
    direction: str,
    up_to_id: int,
    from_statuses: tuple[str, ...],
    to_status: str,
) -> list[Message]:
    """Move a conversation's messages up to an id to a later status (e.g. "read")."""
    rows = list(
        tx.orm.scalars(
            select(Message).where(
                Message.conversation_id == conversation_id,
                Message.direction == direction,
                Message.id <= up_to_id,
                Message.status.in_(from_statuses),
            )
        )
    )
    for row in rows:
        row.status = to_status
    return rows


def ghost_receipt(tx: Tx, conversation: Conversation, message: Message, domain: str) -> None:
    """A read receipt from the customer's ghost on a shop message (needs a room)."""
    if not conversation.room_id or not message.matrix_event_id:
        return
    identity = tx.orm.get(ChannelIdentity, conversation.identity_id)
    assert identity is not None
    enqueue(
        tx,
        MATRIX_RECEIPT_OUT,
        receipt_key(conversation.room_id),
        {
            "room_id": conversation.room_id,
            "event_id": message.matrix_event_id,
            "as_user": f"@{identity.ghost_localpart}:{domain}",
        },
        message.matrix_event_id,
    )


def customer_read(tx: Tx, channel: str, external_id: str, up_to_id: int, domain: str) -> bool:
    """The customer saw the shop's messages up to an id: mark them and queue a receipt from
    their ghost, so advisers see it in their client. True if anything changed."""
    found = conversation_of(tx, channel, external_id)
    if found is None:
        return False
    conversation_id = found.id
    rows = advance_status(tx, conversation_id, "out", up_to_id, ("sent", "delivered"), "read")
    latest = max((r for r in rows if r.matrix_event_id), key=lambda r: r.id, default=None)
    if latest is not None:
        conversation = tx.orm.get(Conversation, conversation_id)
        assert conversation is not None
        ghost_receipt(tx, conversation, latest, domain)
    return bool(rows)


def adviser_read(tx: Tx, event_ids: list[str]) -> list[tuple[str, str, list[int]]]:
    """Advisers read up to these events: the customers' messages become "read".
    Returns (channel, external id, message ids) per conversation changed."""
    changed: list[tuple[str, str, list[int]]] = []
    for event_id in event_ids:
        target = message_by_event_id(tx, event_id)
        if target is None:
            continue
        _, identity = conversation_with_identity(tx, target.conversation_id)
        rows = advance_status(
            tx, target.conversation_id, "in", target.id, ("received", "delivered"), "read"
        )
        if rows:
            changed.append((identity.channel, identity.external_id, [r.id for r in rows]))
    return changed


def newest_readable(tx: Tx, channel: str, message_ids: list[int]) -> str | None:
    """The remote id of the newest of these customer messages a messenger can mark as read
    (reactions cannot be)."""
    return tx.orm.scalar(
        select(Message.remote_id)
        .where(
            Message.id.in_(message_ids),
            Message.direction == "in",
            Message.channel == channel,
            Message.kind != "reaction",
        )
        .order_by(Message.id.desc())
        .limit(1)
    )
