"""Customers' identities, their conversations (portals) and messages: lookups and the small
changes several use cases share. Units of work (see hub.db.database); the ORM through tx.orm.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

from hub.db import notices
from hub.db.models import ChannelIdentity, Conversation, Message, table, utcnow
from hub.db.statements import model, run, split, statement

if TYPE_CHECKING:
    from hub.db.database import Tx

CV = table(Conversation)
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def opaque_localpart(prefix: str, channel_code: str) -> str:
    """A ghost localpart that reveals nothing about the customer (no phone number): a Matrix
    ID can never be erased from room history."""
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"{prefix}{channel_code}_{suffix}"


def conversation(tx: Tx, conversation_id: int) -> Conversation | None:
    return tx.orm.get(Conversation, conversation_id)


def identity(tx: Tx, identity_id: int) -> ChannelIdentity | None:
    return tx.orm.get(ChannelIdentity, identity_id)


def identity_by_external_id(tx: Tx, channel: str, external_id: str) -> ChannelIdentity | None:
    return tx.orm.scalar(
        select(ChannelIdentity).where(
            ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id
        )
    )


def conversation_by_identity(tx: Tx, identity_id: int) -> Conversation | None:
    return tx.orm.scalar(select(Conversation).where(Conversation.identity_id == identity_id))


def conversation_of(tx: Tx, channel: str, external_id: str) -> Conversation | None:
    """The conversation of a customer known on a channel, if any."""
    identity = identity_by_external_id(tx, channel, external_id)
    return conversation_by_identity(tx, identity.id) if identity is not None else None


@statement
def _conversation_by_room(dialect: str) -> Executable:
    return select(CV).where(CV.c.room_id == bindparam("room"))


def conversation_by_room(tx: Tx | Connection, room_id: str) -> Conversation | None:
    row = run(tx, _conversation_by_room, {"room": room_id}).first()
    return model(Conversation, split(row, CV)[0]) if row is not None else None


@dataclass(frozen=True)
class RoomConversation:
    """The conversation of a Matrix event's room (None: not a portal), read in the
    transaction that leased the event's job."""

    conversation: Conversation | None


def preload_room(conn: Connection, event: dict[str, Any]) -> RoomConversation:
    room = event.get("room_id")
    return RoomConversation(conversation_by_room(conn, room) if isinstance(room, str) else None)


def conversation_with_identity(
    tx: Tx, conversation_id: int
) -> tuple[Conversation, ChannelIdentity]:
    row = tx.orm.execute(
        select(Conversation, ChannelIdentity)
        .join(ChannelIdentity, ChannelIdentity.id == Conversation.identity_id)
        .where(Conversation.id == conversation_id)
    ).one()
    return row[0], row[1]


def message(tx: Tx, message_id: int) -> Message | None:
    return tx.orm.get(Message, message_id)


def message_by_remote_id(tx: Tx, channel: str, remote_id: str) -> Message | None:
    return tx.orm.scalar(
        select(Message).where(Message.channel == channel, Message.remote_id == remote_id)
    )


def message_by_event_id(tx: Tx, event_id: str) -> Message | None:
    return tx.orm.scalar(select(Message).where(Message.matrix_event_id == event_id))


def update_message(tx: Tx, message_id: int, **values: Any) -> None:
    tx.orm.execute(update(Message).where(Message.id == message_id).values(**values))


def set_room(tx: Tx, conversation_id: int, room_id: str, room_name: str) -> None:
    tx.orm.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(room_id=room_id, room_name=room_name)
    )


def locked(tx: Tx, conversation_id: int) -> Conversation | None:
    """The conversation read afresh and held until commit, for a read-modify-write of its
    `meta`: on PostgreSQL another process (or a concurrent unit of this one) may be writing
    it, and writing back a `meta` read before its commit would drop its keys (a lost
    voice-note reply date: a second holding reply). SQLite has one writer at a time."""
    tx.orm.flush()
    return tx.orm.get(Conversation, conversation_id, with_for_update=True, populate_existing=True)


def set_meta(tx: Tx, conversation_id: int, **values: Any) -> Conversation:
    """Merge small facts into a conversation's `meta` ({"blocked": true}, ...)."""
    conversation = locked(tx, conversation_id)
    assert conversation is not None
    conversation.meta = {**(conversation.meta or {}), **values}
    # Written now: the next message of the same batch reads the conversation with a plain
    # SELECT (hub.db.identities), which would not see a change the ORM still holds.
    tx.orm.flush()
    return conversation


def set_blocked(
    tx: Tx, conversation_id: int, blocked: bool, room_notice: str | None = None
) -> None:
    """Mark or clear "the customer blocked the shop on this channel"; tell the room."""
    conversation = tx.orm.get(Conversation, conversation_id)
    assert conversation is not None
    if bool((conversation.meta or {}).get("blocked")) == blocked:
        return
    set_meta(tx, conversation_id, blocked=blocked)
    if room_notice and conversation.room_id:
        notices.notice(
            tx,
            conversation.room_id,
            room_notice,
            f"blocked:{conversation_id}:{utcnow().isoformat()}",
        )
