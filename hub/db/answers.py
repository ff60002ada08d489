"""The bot's automatic answers to a customer's message that depend on the message itself: a
voice note (asked once a day to write instead), a WhatsApp catalogue order (it becomes the
cart), a messenger's start command (the channel's greeting). Part of the store path's unit
of work (hub.db.inbound); the answers that depend on the time are hub.scheduler.automations.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete

from hub.core.types import InboundMessage
from hub.db import conversations, notices
from hub.db.jobs import conversation_key, enqueue
from hub.db.messages import insert_message
from hub.db.models import Conversation, Message, utcnow
from hub.i18n import _
from hub.jobs.kinds import CHANNEL_SEND, ORDER_TO_CART

if TYPE_CHECKING:
    from hub.db.database import Tx
    from hub.db.inbound import InboundPolicy

VOICE_REPLY_INTERVAL = timedelta(hours=24)


def automatic_answers(tx: Tx, policy: InboundPolicy, msg: InboundMessage, message: Message) -> None:
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
            policy.channel,
            policy.start_greeting,
            f"start-greeting:{message.id}",
            sender_name=policy.shop_name,
        )


def bot_message(
    tx: Tx,
    conversation_id: int,
    channel: str,
    text: str,
    key: str,
    *,
    sender_name: str | None,
    data: dict[str, Any] | None = None,
) -> Message | None:
    """A text of the bot to the customer (with reply buttons in `data`, where the channel
    has them), sent through the channel like an adviser's."""
    message = insert_message(
        tx,
        {
            "conversation_id": conversation_id,
            "channel": channel,
            "direction": "out",
            "kind": "text",
            "text": text,
            "data": data,
            "sender_name": sender_name,
            "status": "pending",
        },
    )
    assert message is not None  # no remote id yet: nothing to collide with
    payload = {"message_id": message.id}
    if enqueue(tx, CHANNEL_SEND, conversation_key(conversation_id), payload, key) is None:
        # Said before under this key (a unit run again): no second, never-sent row.
        tx.orm.execute(delete(Message).where(Message.id == message.id))
        return None
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
    bot_message(
        tx,
        conversation.id,
        policy.channel,
        text,
        f"voice-reply:{message.id}",
        sender_name=policy.shop_name,
    )
    if conversation.room_id:
        notices.notice(
            tx,
            conversation.room_id,
            _("🤖 Sent to the customer (voice note reply): {text}").format(text=text),
            f"voice-reply-notice:{message.id}",
        )
