"""Conversation resolution: where a customer's message lands and what must happen next."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.outbox import enqueue
from hub.core.types import InboundMessage, Sender
from hub.db import hot, repo
from hub.db.models import Conversation, Message, utcnow

DELIVER_TO_MATRIX = "matrix.deliver"
SEND_TO_CHANNEL = "channel.send"


def conversation_key(conversation_id: int) -> str:
    """Ordering key: everything of one conversation is delivered in order."""
    return f"conv:{conversation_id}"


async def record_inbound(
    s: AsyncSession,
    sender: Sender,
    msg: InboundMessage,
    *,
    ghost_prefix: str,
    channel_code: str,
) -> Message | None:
    """Store a customer's message and queue its delivery to Matrix, in the caller's
    transaction. Returns None for a message already recorded (a provider redelivery)."""
    identity = await repo.get_or_create_identity(
        s,
        sender.channel,
        sender.external_id,
        sender.display_name,
        repo.opaque_localpart(ghost_prefix, channel_code),
    )
    conversation = await repo.get_or_create_conversation(s, identity.id)
    reply_to_id: int | None = None
    if msg.reply_to_remote_id:
        target = await repo.message_by_remote_id(s, sender.channel, msg.reply_to_remote_id)
        reply_to_id = target.id if target else None
    message = await repo.insert_message(
        s, _inbound_values(conversation.id, sender, msg, reply_to_id)
    )
    if message is None:
        return None
    written = _written_at(msg, conversation.last_inbound_at)
    if written is not None:
        conversation.last_inbound_at = written
    await enqueue(
        s,
        DELIVER_TO_MATRIX,
        conversation_key(conversation.id),
        {"message_id": message.id},
        f"deliver:{message.id}",
    )
    return message


def record_inbound_sync(
    conn: Connection,
    sender: Sender,
    msg: InboundMessage,
    *,
    ghost_prefix: str,
    channel_code: str,
    offer: hot.LeaseOffer | None = None,
) -> Message | None:
    """`record_inbound` as Core on a synchronous connection (a `Database.write` unit of
    work, for the hot paths of the web chat and webhooks): the same rows, in far fewer
    statements. Returns a transient Message, None for a message already recorded. With a
    worker's `offer`, the delivery job may go straight to that worker (hot.LeaseOffer) with
    the rows its handler needs."""
    found = hot.identity_conversation(
        conn,
        sender.channel,
        sender.external_id,
        sender.display_name,
        lambda: repo.opaque_localpart(ghost_prefix, channel_code),
    )
    reply_to_id: int | None = None
    if msg.reply_to_remote_id:
        reply_to_id = hot.message_id_by_remote(conn, sender.channel, msg.reply_to_remote_id)
    message = hot.insert_message(
        conn, _inbound_values(found.conversation_id, sender, msg, reply_to_id)
    )
    if message is None:
        return None
    written = _written_at(msg, found.last_inbound_at)
    if written is not None:
        hot.set_last_inbound(conn, found.conversation_id, written)
    context = None
    if found.rows is not None and reply_to_id is None:
        identity, conversation = found.rows
        if written is not None:
            conversation.last_inbound_at = written
        context = hot.Delivery(message, conversation, identity, None)
    hot.enqueue(
        conn,
        DELIVER_TO_MATRIX,
        conversation_key(found.conversation_id),
        {"message_id": message.id},
        f"deliver:{message.id}",
        offer=offer,
        context=context,
    )
    return message


def _inbound_values(
    conversation_id: int, sender: Sender, msg: InboundMessage, reply_to_id: int | None
) -> dict[str, Any]:
    media: dict[str, Any] | None = asdict(msg.media) if msg.media else None
    if media is not None and msg.voice:
        media["voice"] = True
    return {
        "conversation_id": conversation_id,
        "channel": sender.channel,
        "direction": "in",
        "kind": msg.kind,
        "text": msg.text,
        "media": media,
        "remote_id": msg.remote_id,
        "reply_to_message_id": reply_to_id,
        "sender_name": sender.display_name,
        "data": msg.data,
        "status": "received",
    }


def _written_at(msg: InboundMessage, last_inbound_at: datetime | None) -> datetime | None:
    """The conversation's new last inbound time, None to keep it. The reply window counts
    from when the customer wrote, not from when we heard of it (providers redeliver late);
    a clock running ahead must not stretch it."""
    now = utcnow()
    written = min(msg.timestamp, now) if msg.timestamp else now
    if last_inbound_at is None or written > last_inbound_at:
        return written
    return None


async def queue_outbound(
    s: AsyncSession,
    conversation: Conversation,
    channel: str,
    values: dict[str, Any],
    *,
    idempotency: str | None = None,
) -> Message | None:
    """Store a message for the customer and queue its sending, in the caller's transaction.
    `values` holds the message columns (kind, text, html, media, data, sender_mxid...)."""
    message = await repo.insert_message(
        s,
        {
            "conversation_id": conversation.id,
            "channel": channel,
            "direction": "out",
            "status": "pending",
            **values,
        },
    )
    if message is None:
        return None
    await enqueue(
        s,
        SEND_TO_CHANNEL,
        conversation_key(conversation.id),
        {"message_id": message.id},
        idempotency or f"send:{message.id}",
    )
    return message
