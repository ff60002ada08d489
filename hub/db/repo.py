"""Repositories: the hub's SQL for customers, conversations, messages and media."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import (
    ChannelIdentity,
    Conversation,
    Customer,
    MediaFile,
    Message,
    WebchatVisitor,
    utcnow,
)
from hub.db.upsert import insert_ignore

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def opaque_localpart(prefix: str, channel_code: str) -> str:
    """A ghost localpart that reveals nothing about the customer (no phone number)."""
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"{prefix}{channel_code}_{suffix}"


async def get_or_create_identity(
    s: AsyncSession,
    channel: str,
    external_id: str,
    display_name: str | None,
    ghost_localpart: str,
) -> ChannelIdentity:
    found = await identity_by_external_id(s, channel, external_id)
    if found is not None:
        if display_name and found.display_name != display_name:
            found.display_name = display_name
        return found
    customer = Customer(display_name=display_name)
    s.add(customer)
    await s.flush()
    inserted = await insert_ignore(
        s,
        ChannelIdentity,
        {
            "customer_id": customer.id,
            "channel": channel,
            "external_id": external_id,
            "display_name": display_name,
            "ghost_localpart": ghost_localpart,
            "created_at": utcnow(),
        },
        ["channel", "external_id"],
    )
    if not inserted:  # another process created it first
        await s.delete(customer)
    found = await identity_by_external_id(s, channel, external_id)
    assert found is not None
    return found


async def identity_by_external_id(
    s: AsyncSession, channel: str, external_id: str
) -> ChannelIdentity | None:
    return await s.scalar(
        select(ChannelIdentity).where(
            ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id
        )
    )


async def get_or_create_conversation(s: AsyncSession, identity_id: int) -> Conversation:
    found = await conversation_by_identity(s, identity_id)
    if found is not None:
        return found
    await insert_ignore(
        s, Conversation, {"identity_id": identity_id, "created_at": utcnow()}, ["identity_id"]
    )
    found = await conversation_by_identity(s, identity_id)
    assert found is not None
    return found


async def conversation_by_identity(s: AsyncSession, identity_id: int) -> Conversation | None:
    return await s.scalar(select(Conversation).where(Conversation.identity_id == identity_id))


async def conversation_by_room(s: AsyncSession, room_id: str) -> Conversation | None:
    return await s.scalar(select(Conversation).where(Conversation.room_id == room_id))


async def conversation_with_identity(
    s: AsyncSession, conversation_id: int
) -> tuple[Conversation, ChannelIdentity]:
    row = (
        await s.execute(
            select(Conversation, ChannelIdentity)
            .join(ChannelIdentity, ChannelIdentity.id == Conversation.identity_id)
            .where(Conversation.id == conversation_id)
        )
    ).one()
    return row[0], row[1]


async def insert_message(s: AsyncSession, values: dict[str, Any]) -> Message | None:
    """Insert a message; None when (channel, remote_id) or the event id is already known."""
    values = {"created_at": utcnow(), "status": "pending", **values}
    if not values.get("remote_id") and not values.get("matrix_event_id"):
        # The bot's own messages: nothing to deduplicate by (the outbox key guards them).
        message = Message(**values)
        s.add(message)
        await s.flush()
        return message
    conflict = ["channel", "remote_id"] if values.get("remote_id") else ["matrix_event_id"]
    if not await insert_ignore(s, Message, values, conflict):
        return None
    if values.get("remote_id"):
        where = (Message.channel == values["channel"]) & (Message.remote_id == values["remote_id"])
    else:
        where = Message.matrix_event_id == values["matrix_event_id"]
    return await s.scalar(select(Message).where(where))


async def message_by_remote_id(s: AsyncSession, channel: str, remote_id: str) -> Message | None:
    return await s.scalar(
        select(Message).where(Message.channel == channel, Message.remote_id == remote_id)
    )


async def message_by_event_id(s: AsyncSession, event_id: str) -> Message | None:
    return await s.scalar(select(Message).where(Message.matrix_event_id == event_id))


async def visible_messages(
    s: AsyncSession, conversation_id: int, after_id: int, limit: int = 200
) -> list[Message]:
    """Messages a customer may see: their own and the shop's that were sent to them."""
    rows = await s.scalars(
        select(Message)
        .where(
            Message.conversation_id == conversation_id,
            Message.id > after_id,
            (Message.direction == "in") | (Message.status.in_(("sent", "delivered", "read"))),
        )
        .order_by(Message.id)
        .limit(limit)
    )
    return list(rows)


async def add_media(s: AsyncSession, media: MediaFile) -> MediaFile:
    s.add(media)
    await s.flush()
    return media


async def media_by_id(s: AsyncSession, media_id: str) -> MediaFile | None:
    return await s.get(MediaFile, media_id)


async def visitor_by_token_hash(s: AsyncSession, token_hash: str) -> WebchatVisitor | None:
    return await s.scalar(select(WebchatVisitor).where(WebchatVisitor.token_hash == token_hash))


async def advance_status(
    s: AsyncSession,
    conversation_id: int,
    direction: str,
    up_to_id: int,
    from_statuses: tuple[str, ...],
    to_status: str,
) -> list[Message]:
    """Move a conversation's messages up to an id to a later status (e.g. "read")."""
    rows = list(
        await s.scalars(
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


async def latest_reaction(
    s: AsyncSession, conversation_id: int, target_id: int, before: int
) -> Message | None:
    """The customer's most recent reaction on a message (to remove it)."""
    return await s.scalar(
        select(Message)
        .where(
            Message.conversation_id == conversation_id,
            Message.kind == "reaction",
            Message.reply_to_message_id == target_id,
            Message.id < before,
            Message.text != "",
        )
        .order_by(Message.id.desc())
        .limit(1)
    )
