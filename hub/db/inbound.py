"""Where every inbound message is stored: the one unit of work for what a channel parsed
(messages, reactions, edits, delivery statuses, blocks), used by every channel, web chat
included, text and media alike.

`store_events(tx, policy, envelopes)` stores a whole webhook batch in one transaction with
the jobs it causes (delivery to Matrix, the bot's automatic answers), so the webhook can be
acknowledged as soon as it returns. A message already stored (a provider's redelivery) is
counted as a duplicate and changes nothing: the unique (channel, remote id) is the dedupe.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.sql import Executable

from hub.core.types import (
    BlockChange,
    Envelope,
    InboundEdit,
    InboundMessage,
    InboundReaction,
    Sender,
    StatusUpdate,
)
from hub.db import conversations, notices
from hub.db.identities import IdentityConversation, identity_conversation
from hub.db.jobs import conversation_key, enqueue
from hub.db.messages import MessageContext
from hub.db.models import ChannelIdentity, Conversation, Customer, MediaFile, Message, table, utcnow
from hub.db.receipts import ghost_receipt
from hub.db.statements import model, run, statement
from hub.db.upsert import dialect_insert
from hub.jobs.kinds import CHANNEL_PROFILE, CHANNEL_SEND, MATRIX_DELIVER, ORDER_TO_CART

if TYPE_CHECKING:
    from hub.db.database import Tx

log = logging.getLogger(__name__)

CU = table(Customer)
CI = table(ChannelIdentity)
CV = table(Conversation)
M = table(Message)
MF = table(MediaFile)
_STATUS_RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}
VOICE_REPLY_INTERVAL = timedelta(hours=24)


@dataclass(frozen=True)
class InboundPolicy:
    """What storing one channel's events needs to know (from the channel and the config)."""

    channel: str  # the channel's kind, e.g. "whatsapp"
    code: str  # its short code in ghost localparts, e.g. "wa"
    label: str  # its name in room notices, e.g. "WhatsApp"
    ghost_prefix: str
    domain: str  # the homeserver's, for ghost user ids
    shop_name: str
    looks_up_names: bool = False  # the channel can tell a customer's name later
    voice_note_reply: str | None = None  # sent once a day to customers sending voice notes
    start_greeting: str | None = None  # the answer to a messenger's start command


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    statuses: int = 0
    ignored: int = 0
    # The customer messages stored (detached rows), in envelope order.
    messages: list[Message] = field(default_factory=list)


# -- statements ---------------------------------------------------------------------------


@statement
def _message_id_by_remote(dialect: str) -> Executable:
    return select(M.c.id).where(
        M.c.channel == bindparam("channel"), M.c.remote_id == bindparam("rid")
    )


@statement(insert=True)
def _insert_message_dedupe(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    return (
        insert(M).on_conflict_do_nothing(index_elements=["channel", "remote_id"]).returning(M.c.id)
    )


@statement(insert=True)
def _insert_message_by_event(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    return insert(M).on_conflict_do_nothing(index_elements=["matrix_event_id"]).returning(M.c.id)


@statement(insert=True)
def _insert_message(dialect: str) -> Executable:
    return M.insert().returning(M.c.id)


@statement
def _set_last_inbound(dialect: str) -> Executable:
    return update(CV).where(CV.c.id == bindparam("cid")).values(last_inbound_at=bindparam("at"))


@statement(insert=True)
def _insert_media(dialect: str) -> Executable:
    return MF.insert()


def insert_message(tx: Tx, values: dict[str, Any]) -> Message | None:
    """Insert a message; None when its (channel, remote_id) or its Matrix event is known
    already. Returns a detached Message with every column set."""
    full: dict[str, Any] = {c.name: None for c in M.columns if c.name != "id"}
    full |= {"created_at": utcnow(), "status": "pending", **values}
    if full.get("remote_id"):
        stmt = _insert_message_dedupe
    elif full.get("matrix_event_id"):
        stmt = _insert_message_by_event
    else:  # the bot's own messages: their job's idempotency key guards them
        stmt = _insert_message
    new_id = run(tx, stmt, full).scalar()
    if new_id is None:
        return None
    full["id"] = new_id
    return model(Message, full)


# -- the unit of work -----------------------------------------------------------------------


def store_events(tx: Tx, policy: InboundPolicy, envelopes: list[Envelope]) -> IngestResult:
    """Store a parsed batch in one transaction, with the jobs it causes."""
    result = IngestResult()
    for env in envelopes:
        event = env.event
        if isinstance(event, StatusUpdate):
            result.statuses += _status(tx, policy, event)
        elif env.sender is None:
            result.ignored += 1
        elif isinstance(event, InboundMessage):
            message = store_message(tx, policy, env.sender, event)
            if message is None:
                result.duplicates += 1
            else:
                result.stored += 1
                result.messages.append(message)
        elif isinstance(event, BlockChange):
            _block_change(tx, policy, env.sender, event)
        else:
            stored = _related(tx, policy, env.sender, event)
            result.stored += stored
            result.duplicates += 1 - stored
    return result


def _customer(tx: Tx, policy: InboundPolicy, sender: Sender) -> IdentityConversation:
    """The sender's identity and conversation, created on their first message."""
    return identity_conversation(
        tx,
        sender.channel,
        sender.external_id,
        sender.display_name,
        lambda: conversations.opaque_localpart(policy.ghost_prefix, policy.code),
    )


def store_message(
    tx: Tx, policy: InboundPolicy, sender: Sender, msg: InboundMessage
) -> Message | None:
    """A customer's message and its delivery to Matrix (plus the bot's automatic answers);
    None for a message stored before."""
    found = _customer(tx, policy, sender)
    if policy.looks_up_names and not found.display_name:
        # Queued before the delivery, so the room is created with the customer's name.
        enqueue(
            tx,
            CHANNEL_PROFILE,
            conversation_key(found.conversation_id),
            {"identity_id": found.identity_id},
            str(found.identity_id),
        )
    reply_to_id: int | None = None
    if msg.reply_to_remote_id:
        params = {"channel": sender.channel, "rid": msg.reply_to_remote_id}
        reply_to_id = run(tx, _message_id_by_remote, params).scalar()
    message = insert_message(tx, _inbound_values(found.conversation_id, sender, msg, reply_to_id))
    if message is None:
        return None
    if msg.media is not None and msg.media.media_id and msg.media.sha256:
        _record_file(tx, found.conversation_id, msg)
    written = _written_at(msg, found.last_inbound_at)
    if written is not None:
        run(tx, _set_last_inbound, {"cid": found.conversation_id, "at": written})
    context = None
    if found.rows is not None and reply_to_id is None:
        identity, conversation = found.rows
        if written is not None:
            conversation.last_inbound_at = written
        context = MessageContext(message, conversation, identity, None)
    enqueue(
        tx,
        MATRIX_DELIVER,
        conversation_key(found.conversation_id),
        {"message_id": message.id},
        str(message.id),
        context=context,
    )
    _automatic_answers(tx, policy, msg, message)
    return message


def _record_file(tx: Tx, conversation_id: int, msg: InboundMessage) -> None:
    """A file the hub received itself (a widget upload, already on disk)."""
    media = msg.media
    assert media is not None and media.media_id is not None
    run(
        tx,
        _insert_media,
        {
            "id": media.media_id,
            "conversation_id": conversation_id,
            "filename": media.filename,
            "mimetype": media.mimetype,
            "size": media.size,
            "sha256": media.sha256,
            "mxc_uri": None,
            "created_at": utcnow(),
        },
    )


def _inbound_values(
    conversation_id: int, sender: Sender, msg: InboundMessage, reply_to_id: int | None
) -> dict[str, Any]:
    media: dict[str, Any] | None = asdict(msg.media) if msg.media else None
    if media is not None:
        media.pop("sha256", None)  # the file's row holds it
        if msg.voice:
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


# -- the bot's automatic answers ------------------------------------------------------------


def _automatic_answers(
    tx: Tx, policy: InboundPolicy, msg: InboundMessage, message: Message
) -> None:
    if msg.voice and policy.voice_note_reply:
        _voice_note_reply(tx, policy, message)
    if msg.kind == "order":
        enqueue(
            tx,
            ORDER_TO_CART,
            conversation_key(message.conversation_id),
            {"message_id": message.id},
            str(message.id),
        )
    if (msg.data or {}).get("command") == "start" and policy.start_greeting:
        bot_message(
            tx,
            message.conversation_id,
            policy,
            policy.start_greeting,
            f"start-greeting:{message.id}",
        )


def bot_message(
    tx: Tx, conversation_id: int, policy: InboundPolicy, text: str, key: str
) -> Message | None:
    """A text of the bot to the customer, sent through the channel like an adviser's."""
    message = insert_message(
        tx,
        {
            "conversation_id": conversation_id,
            "channel": policy.channel,
            "direction": "out",
            "kind": "text",
            "text": text,
            "sender_name": policy.shop_name,
            "status": "pending",
        },
    )
    assert message is not None  # no remote id yet: nothing to collide with
    enqueue(tx, CHANNEL_SEND, conversation_key(conversation_id), {"message_id": message.id}, key)
    return message


def _voice_note_reply(tx: Tx, policy: InboundPolicy, message: Message) -> None:
    """Ask the customer once a day to write instead."""
    conversation = tx.orm.get(Conversation, message.conversation_id)
    assert conversation is not None
    last = (conversation.meta or {}).get("voice_reply_at")
    now = utcnow()
    if last and now - datetime.fromisoformat(last) < VOICE_REPLY_INTERVAL:
        return
    conversations.set_meta(tx, conversation.id, voice_reply_at=now.isoformat())
    text = policy.voice_note_reply
    assert text is not None
    bot_message(tx, conversation.id, policy, text, f"voice-reply:{message.id}")
    if conversation.room_id:
        notices.notice(
            tx,
            conversation.room_id,
            f"🤖 Sent to the customer (voice note reply): {text}",
            f"voice-reply-notice:{message.id}",
        )


# -- reactions, edits, statuses, blocks -----------------------------------------------------


def _related(
    tx: Tx, policy: InboundPolicy, sender: Sender, event: InboundReaction | InboundEdit
) -> int:
    """A reaction or an edit: a message row pointing at its target, delivered to Matrix."""
    found = _customer(tx, policy, sender)
    params = {"channel": sender.channel, "rid": event.target_remote_id}
    target_id = run(tx, _message_id_by_remote, params).scalar()
    if target_id is None:
        log.info("%s: %s for an unknown message ignored", policy.channel, type(event).__name__)
        return 0
    reaction = isinstance(event, InboundReaction)
    message = insert_message(
        tx,
        {
            "conversation_id": found.conversation_id,
            "channel": sender.channel,
            "direction": "in",
            "kind": "reaction" if reaction else "edit",
            "text": event.emoji if isinstance(event, InboundReaction) else event.text,
            "remote_id": event.remote_id,
            "reply_to_message_id": target_id,
            "sender_name": sender.display_name,
            "status": "received",
        },
    )
    if message is None:
        return 0
    enqueue(
        tx,
        MATRIX_DELIVER,
        conversation_key(found.conversation_id),
        {"message_id": message.id},
        str(message.id),
    )
    return 1


def _status(tx: Tx, policy: InboundPolicy, update_: StatusUpdate) -> int:
    """What the messenger says happened to a message the shop sent."""
    message = conversations.message_by_remote_id(tx, policy.channel, update_.remote_id)
    if message is None or message.direction != "out":
        log.info("%s: status %s for unknown message ignored", policy.channel, update_.status)
        return 0
    conversation = tx.orm.get(Conversation, message.conversation_id)
    assert conversation is not None
    if update_.status == "failed":
        if message.status == "failed":
            return 0
        message.status = "failed"
        if conversation.room_id:
            reason = update_.error_text or "the messenger refused the message"
            notices.notice(
                tx,
                conversation.room_id,
                f"⚠️ Not delivered to the customer: {reason}"
                + (f" (code {update_.error_code})" if update_.error_code else ""),
                f"failed:{message.id}",
                reply_to=message.matrix_event_id,
            )
        return 1
    if _STATUS_RANK.get(update_.status, 0) <= _STATUS_RANK.get(message.status, 0):
        return 0  # statuses arrive out of order; never go back from read to delivered
    message.status = update_.status
    if update_.status == "read" and conversation.room_id and message.matrix_event_id:
        ghost_receipt(tx, conversation, message, policy.domain)
    return 1


def _block_change(tx: Tx, policy: InboundPolicy, sender: Sender, event: BlockChange) -> None:
    """The customer blocked (or unblocked) the shop's account on the channel."""
    conversation = conversations.conversation_of(tx, sender.channel, sender.external_id)
    if conversation is None:
        return
    notice = (
        f"⛔ The customer blocked the shop on {policy.label}: messages cannot reach them."
        if event.blocked
        else f"✅ The customer unblocked the shop on {policy.label}."
    )
    conversations.set_blocked(tx, conversation.id, event.blocked, notice)
