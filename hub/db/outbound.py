"""Messages to the customer (from advisers and from the bot) as units of work: queueing them
with their channel.send job, what a send reads, and what it records; advisers' edits,
redactions and reactions of what the customer got (channel.edit, channel.delete,
channel.react)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.sql import Executable

from hub.db import conversations, exchanges, notices
from hub.db.jobs import conversation_key, enqueue
from hub.db.messages import MessageContext, insert_message
from hub.db.models import ChannelIdentity, Conversation, Message, OutboxItem, table, utcnow
from hub.db.statements import model, run, split, statement
from hub.i18n import _
from hub.jobs.kinds import CHANNEL_DELETE, CHANNEL_EDIT, CHANNEL_REACT, CHANNEL_SEND

if TYPE_CHECKING:
    from hub.db.database import Tx

CI = table(ChannelIdentity)
CV = table(Conversation)
M = table(Message)


def queue(
    tx: Tx,
    conversation_id: int,
    channel: str,
    values: dict[str, Any],
    *,
    idempotency: str | None = None,
) -> Message | None:
    """Store a message for the customer and queue its sending. `values` holds the message
    columns (kind, text, html, media, data, sender_mxid...). None when the message exists
    already (its Matrix event was handled before)."""
    message = insert_message(
        tx,
        {"conversation_id": conversation_id, "channel": channel, "direction": "out", **values},
    )
    if message is None:
        return None
    exchanges.adviser_message(tx, message)  # the KPIs' rows (an adviser's answer)
    enqueue(
        tx,
        CHANNEL_SEND,
        conversation_key(conversation_id),
        {"message_id": message.id},
        idempotency or str(message.id),
    )
    return message


@statement
def _conversation_rows(dialect: str) -> Executable:
    return select(CV, CI).join(CI, CI.c.id == CV.c.identity_id).where(CV.c.id == bindparam("cid"))


@statement
def _message_by_event(dialect: str) -> Executable:
    return select(M).where(M.c.matrix_event_id == bindparam("eid"))


@statement
def _set_last_adviser_reply(dialect: str) -> Executable:
    return (
        update(CV).where(CV.c.id == bindparam("cid")).values(last_adviser_reply_at=bindparam("at"))
    )


@statement
def _sent(dialect: str) -> Executable:
    return (
        update(M)
        .where(M.c.id == bindparam("mid"), M.c.status.in_(("pending", "failed")))
        .values(remote_id=bindparam("rid"), status="sent")
    )


def adviser_message(
    tx: Tx, conversation_id: int, values: dict[str, Any], reply_event: str | None
) -> Message | None:
    """An adviser's Matrix message for the customer; None if that event was handled before.
    Its channel.send job carries the rows its handler needs (the hot path of a reply)."""
    row = run(tx, _conversation_rows, {"cid": conversation_id}).one()
    cv, ci = split(row, CV, CI)
    target = None
    if reply_event:
        found = run(tx, _message_by_event, {"eid": reply_event}).first()
        target = model(Message, split(found, M)[0]) if found is not None else None
    message = insert_message(
        tx,
        {
            **values,
            "conversation_id": conversation_id,
            "channel": ci["channel"],
            "direction": "out",
            "reply_to_message_id": target.id if target else None,
        },
    )
    if message is None:
        return None
    exchanges.adviser_message(tx, message)  # the KPIs' rows
    now = utcnow()
    run(tx, _set_last_adviser_reply, {"cid": conversation_id, "at": now})
    cv["last_adviser_reply_at"] = now
    context = MessageContext(message, model(Conversation, cv), model(ChannelIdentity, ci), target)
    enqueue(
        tx,
        CHANNEL_SEND,
        conversation_key(conversation_id),
        {"message_id": message.id},
        str(message.id),
        context=context,
    )
    return message


def adviser_reaction(tx: Tx, target_event: str, emoji: str, event_id: str) -> None:
    """An adviser reacted to a customer's message: pass it on (where the channel can)."""
    target = reaction_target_by_event(tx, target_event)
    if target is not None:
        queue_reaction(tx, target, emoji, event_id)


def reaction_target_by_event(tx: Tx, target_event: str) -> Message | None:
    """The customer's message an adviser's reaction is on, if the channel knows it (a
    reaction to anything else has nothing to reach)."""
    target = conversations.message_by_event_id(tx, target_event)
    if target is None or target.direction != "in" or not target.remote_id:
        return None
    return target


def queue_reaction(tx: Tx, target: Message, emoji: str, event_id: str) -> None:
    """channel.react for `target` ("" removes the reaction), once per Matrix event."""
    enqueue(
        tx,
        CHANNEL_REACT,
        conversation_key(target.conversation_id),
        {"target_message_id": target.id, "emoji": emoji},
        event_id,
    )


def relayed_reaction(tx: Tx, event_id: str) -> Message | None:
    """The customer's message an adviser's reaction `event_id` was passed on to, if it was.
    The channel.react job is the record: a reaction has no row of its own, and one whose
    job was purged (after `outbox.done_days`) is too old to take back anyway."""
    job = tx.orm.scalar(
        select(OutboxItem).where(OutboxItem.idempotency_key == f"{CHANNEL_REACT}/{event_id}")
    )
    target_id = job.payload.get("target_message_id") if job is not None else None
    if job is None or not job.payload.get("emoji") or not isinstance(target_id, int):
        return None
    target = tx.orm.get(Message, target_id)
    return target if target is not None and target.remote_id else None


def relayed_message(tx: Tx, event_id: str) -> Message | None:
    """The message for the customer that Matrix event `event_id` became, unless it never
    reached them (failed, cancelled) or is gone for them already."""
    found = run(tx, _message_by_event, {"eid": event_id}).first()
    if found is None:
        return None
    message = model(Message, split(found, M)[0])
    if message.direction != "out" or message.status in ("failed", "cancelled", "deleted"):
        return None
    return message


def queue_edit(tx: Tx, message: Message, text: str, html: str | None, event_id: str) -> None:
    """channel.edit: show the customer the new text. Ordered after the message's own
    channel.send (same conversation key), so an edit made while it was still being sent
    finds its remote id."""
    enqueue(
        tx,
        CHANNEL_EDIT,
        conversation_key(message.conversation_id),
        {"message_id": message.id, "text": text, "html": html, "event_id": event_id},
        event_id,
    )


def queue_delete(tx: Tx, message: Message, event_id: str) -> None:
    """channel.delete: remove the message from the customer's chat."""
    enqueue(
        tx,
        CHANNEL_DELETE,
        conversation_key(message.conversation_id),
        {"message_id": message.id, "event_id": event_id},
        event_id,
    )


def record_edit(tx: Tx, message_id: int, text: str, html: str | None, event_id: str) -> None:
    """The channel shows the new text: the row says what the customer sees (the web chat's
    history reads it), and `data.edited` which edit that is."""
    msg = tx.orm.get(Message, message_id)
    if msg is None:
        return
    msg.text, msg.html = text, html
    msg.data = {**(msg.data or {}), "edited": event_id}


def record_delete(tx: Tx, message_id: int) -> None:
    """The message is gone for the customer. A status of its own (not a flag in `data`):
    the web chat's history shows only sent, delivered and read messages, and later
    receipts move only those."""
    msg = tx.orm.get(Message, message_id)
    if msg is not None:
        msg.status = "deleted"


def set_reaction(tx: Tx, channel: str, remote_id: str, emoji: str) -> int | None:
    """Remember the shop's reaction on a customer's message (`data.reaction`, "" removed);
    the message's id, None when it is unknown."""
    msg = conversations.message_by_remote_id(tx, channel, remote_id)
    if msg is None:
        return None
    data = {k: v for k, v in (msg.data or {}).items() if k != "reaction"}
    msg.data = {**data, "reaction": emoji} if emoji else data
    return msg.id


def change_failed(tx: Tx, message_id: int, what: str, reason: str, event_id: str) -> None:
    """An edit or deletion the channel refused for good: the advisers must know the
    customer still sees the message as it was."""
    msg = tx.orm.get(Message, message_id)
    if msg is None:
        return
    conversation = tx.orm.get(Conversation, msg.conversation_id)
    if conversation is None or not conversation.room_id:
        return
    if what == "edit":
        text = _("The customer still sees the first version: {reason}")
    else:
        text = _("The message was not deleted for the customer: {reason}")
    notices.notice(
        tx,
        conversation.room_id,
        "⚠️ " + text.format(reason=reason),
        f"change-failed:{event_id}",
        reply_to=msg.matrix_event_id,
    )


def mark_sent(tx: Tx, message_id: int, remote_id: str, unblock: int | None) -> None:
    """The channel accepted the message as `remote_id`. `unblock`: the conversation that was
    marked blocked; a message going through means the customer no longer blocks the shop."""
    run(tx, _sent, {"mid": message_id, "rid": remote_id})
    if unblock is not None:
        conversations.set_blocked(tx, unblock, False)


def send_failed(tx: Tx, message_id: int, reason: str, blocked: bool) -> None:
    """The message cannot be sent: mark it, tell the advisers in plain words."""
    msg = tx.orm.get(Message, message_id)
    if msg is None:
        return
    msg.status = "failed"
    conversation = tx.orm.get(Conversation, msg.conversation_id)
    assert conversation is not None
    if blocked:
        conversations.set_meta(tx, conversation.id, blocked=True)
    if conversation.room_id:
        notices.notice(
            tx,
            conversation.room_id,
            "⚠️ " + _("Not delivered to the customer: {reason}").format(reason=reason),
            f"undelivered:{msg.id}",
            reply_to=msg.matrix_event_id,
        )


def reaction_target(tx: Tx, message_id: int) -> tuple[Message, ChannelIdentity] | None:
    """The customer's message an adviser reacted to, and its channel identity."""
    target = tx.orm.get(Message, message_id)
    if target is None or not target.remote_id:
        return None
    _, identity = conversations.conversation_with_identity(tx, target.conversation_id)
    return target, identity


def set_display_name(tx: Tx, identity_id: int, name: str) -> None:
    """A name the channel told us later, unless one is known by now."""
    row = tx.orm.get(ChannelIdentity, identity_id)
    if row is not None and not row.display_name:
        row.display_name = name[:255]
