"""Putting customers' messages into Matrix: what a delivery records (what it reads is
hub.db.messages.MessageContext). Units of work (see hub.db.database); prepared statements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.sql import Executable

from hub.db.models import ChannelIdentity, Conversation, MediaFile, Message, table
from hub.db.statements import run, statement

if TYPE_CHECKING:
    from hub.db.database import Tx

CI = table(ChannelIdentity)
CV = table(Conversation)
M = table(Message)
MF = table(MediaFile)


@statement
def _delivered(dialect: str) -> Executable:
    return (
        update(M)
        .where(M.c.id == bindparam("mid"))
        .values(matrix_event_id=bindparam("eid"), status="delivered")
    )


@statement
def _delivered_media(dialect: str) -> Executable:
    return (
        update(M)
        .where(M.c.id == bindparam("mid"))
        .values(
            matrix_event_id=bindparam("eid"),
            status="delivered",
            media=bindparam("media", type_=M.c.media.type),
        )
    )


@statement
def _set_media_mxc(dialect: str) -> Executable:
    return update(MF).where(MF.c.id == bindparam("fid")).values(mxc_uri=bindparam("mxc"))


@statement
def _set_ghost_profile_name(dialect: str) -> Executable:
    return update(CI).where(CI.c.id == bindparam("iid")).values(ghost_profile_name=bindparam("n"))


def mark_delivered(
    tx: Tx,
    message_id: int,
    event_id: str,
    media: dict[str, Any] | None = None,
    media_id: str | None = None,
    mxc: str | None = None,
) -> None:
    """The message reached Matrix as `event_id` (with its media now stored and uploaded)."""
    if media is None:
        run(tx, _delivered, {"mid": message_id, "eid": event_id})
    else:
        run(tx, _delivered_media, {"mid": message_id, "eid": event_id, "media": media})
    if media_id and mxc:
        run(tx, _set_media_mxc, {"fid": media_id, "mxc": mxc})


def set_ghost_profile_name(tx: Tx, identity_id: int, name: str) -> None:
    run(tx, _set_ghost_profile_name, {"iid": identity_id, "n": name})


def latest_reaction(tx: Tx, conversation_id: int, target_id: int, before: int) -> Message | None:
    """The customer's most recent reaction on a message (to remove it)."""
    return tx.orm.scalar(
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
