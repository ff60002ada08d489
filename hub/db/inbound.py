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
from typing import TYPE_CHECKING, Any, Protocol

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
from hub.db import conversations, exchanges, notices
from hub.db.answers import automatic_answers
from hub.db.identities import IdentityConversation, identity_conversation
from hub.db.jobs import conversation_key, enqueue
from hub.db.messages import MessageContext, insert_message
from hub.db.models import ChannelIdentity, Conversation, Customer, MediaFile, Message, table, utcnow
from hub.db.receipts import ghost_receipt
from hub.db.statements import run, statement
from hub.i18n import _
from hub.jobs.kinds import CHANNEL_PROFILE, MATRIX_DELIVER

if TYPE_CHECKING:
    from hub.db.database import Tx

log = logging.getLogger(__name__)

CU = table(Customer)
CI = table(ChannelIdentity)
CV = table(Conversation)
M = table(Message)
MF = table(MediaFile)
_STATUS_RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}


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
    # How long after the customer's last message the shop may write freely (None: always).
    reply_window: timedelta | None = None
    # Run in order on every customer message: the answers to the bot's questions (photo
    # consent, newsletter opt-in: hub.consent), then the answers that depend on the time
    # (hub.scheduler.automations: greeting, holding reply, missed-conversation check). A hook
    # returning True took the message as an answer to the bot: the hooks after it skip it.
    after_message: tuple[CustomerMessageHook, ...] = ()


class CustomerMessageHook(Protocol):
    def __call__(
        self,
        tx: Tx,
        policy: InboundPolicy,
        message: Message,
        conversation: Conversation | None,  # as it was before (None: a new conversation)
        last_inbound_at: datetime,  # when the customer last wrote (this message or a later)
    ) -> bool | None: ...


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


@statement
def _set_last_inbound(dialect: str) -> Executable:
    return update(CV).where(CV.c.id == bindparam("cid")).values(last_inbound_at=bindparam("at"))


@statement(insert=True)
def _insert_media(dialect: str) -> Executable:
    return MF.insert()


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
    exchanges.customer_message(tx, message)  # the KPIs' rows, in this unit of work
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
    automatic_answers(tx, policy, msg, message)
    latest = written or found.last_inbound_at or utcnow()
    before = found.rows[1] if found.rows else None
    for hook in policy.after_message:
        if hook(tx, policy, message, before, latest):
            break
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
    exchanges.customer_message(tx, message)
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
            reason = update_.error_text or _("the messenger refused the message")
            if update_.error_code:
                reason += f" ({update_.error_code})"
            notices.notice(
                tx,
                conversation.room_id,
                "⚠️ " + _("Not delivered to the customer: {reason}").format(reason=reason),
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
        "⛔ " + _("The customer blocked the shop on {channel}: messages cannot reach them.")
        if event.blocked
        else "✅ " + _("The customer unblocked the shop on {channel}.")
    ).format(channel=_(policy.label))
    conversations.set_blocked(tx, conversation.id, event.blocked, notice)
