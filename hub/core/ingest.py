"""Store what a channel's webhook parsed — messages, reactions, edits, statuses — in one
transaction with the outbox jobs it causes, so the webhook can be acknowledged at once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.bot import enqueue_notice
from hub.core.group_commit import GroupCommit, store_each
from hub.core.outbox import Finish, Job, enqueue
from hub.core.router import (
    DELIVER_TO_MATRIX,
    conversation_key,
    queue_outbound,
    record_inbound,
    record_inbound_sync,
)
from hub.core.text import storable
from hub.core.types import (
    Envelope,
    InboundEdit,
    InboundMessage,
    InboundReaction,
    Sender,
    StatusUpdate,
)
from hub.db import hot, repo
from hub.db.engine import database_of
from hub.db.models import ChannelIdentity, Conversation, Message, utcnow

if TYPE_CHECKING:
    from hub.bridges.base import Channel
    from hub.hub import Hub

log = logging.getLogger(__name__)

_STATUS_RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}
VOICE_REPLY_INTERVAL = timedelta(hours=24)
FETCH_PROFILE = "channel.profile"
ORDER_TO_CART = "commerce.order_to_cart"  # handled by hub.commerce.service.Shop


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    statuses: int = 0
    ignored: int = 0


def _plain(env: Envelope, channel: Channel) -> bool:
    """A customer message needing nothing but storing and delivery (most of them)."""
    e = env.event
    return (
        env.sender is not None
        and isinstance(e, InboundMessage)
        and not e.voice
        and e.kind != "order"
        and (e.data or {}).get("command") is None
        and (env.sender.display_name is not None or not hasattr(channel, "fetch_display_name"))
    )


def _store_plain(
    conn: Connection, batch: tuple[list[Envelope], str, str, hot.LeaseOffer | None]
) -> IngestResult:
    envelopes, ghost_prefix, channel_code, offer = batch
    result = IngestResult()
    for env in envelopes:
        assert env.sender is not None and isinstance(env.event, InboundMessage)
        stored = record_inbound_sync(
            conn,
            env.sender,
            env.event,
            ghost_prefix=ghost_prefix,
            channel_code=channel_code,
            offer=offer,
        )
        if stored is None:
            result.duplicates += 1
        else:
            result.stored += 1
    return result


async def ingest(hub: Hub, channel: Channel, envelopes: list[Envelope]) -> IngestResult:
    """One transaction for a whole webhook batch; then wake the worker."""
    if envelopes and all(_plain(env, channel) for env in envelopes):
        # The hot path: Core statements in one write (see hub.db.database).
        committer = getattr(hub, "ingest_commit", None)
        if committer is None:
            # Urgent: a provider waits for the acknowledgement (issue 3: ≤ 20 ms p99).
            committer = GroupCommit(
                database_of(hub.sessions), store_each(_store_plain), urgent=True
            )
            hub.ingest_commit = committer
        async with hub.worker.handover(committer.db) as offer:
            result = await committer.submit(
                (envelopes, hub.config.appservice.ghost_prefix, channel.code, offer)
            )
        if result.duplicates:
            log.info("%s: %d redelivered event(s) ignored", channel.kind, result.duplicates)
        return result
    result = IngestResult()
    async with hub.sessions.begin() as s:
        for env in envelopes:
            event = env.event
            if isinstance(event, StatusUpdate):
                result.statuses += await _status(hub, s, channel, event)
            elif env.sender is None:
                result.ignored += 1
            elif isinstance(event, InboundMessage):
                await _ask_profile(hub, s, channel, env.sender)
                message = await record_inbound(
                    s,
                    env.sender,
                    event,
                    ghost_prefix=hub.config.appservice.ghost_prefix,
                    channel_code=channel.code,
                )
                if message is None:
                    result.duplicates += 1
                    continue
                result.stored += 1
                if event.voice:
                    await _voice_note_reply(hub, s, channel, message)
                if event.kind == "order":
                    await enqueue(
                        s,
                        ORDER_TO_CART,
                        conversation_key(message.conversation_id),
                        {"message_id": message.id},
                        f"order-cart:{message.id}",
                    )
                if (event.data or {}).get("command") == "start":
                    await _start_greeting(hub, s, channel, message)
            else:
                stored = await _related(hub, s, channel, env.sender, event)
                result.stored += stored
                result.duplicates += 1 - stored
    if result.stored or result.statuses:
        hub.worker.wake()
    if result.duplicates:
        log.info("%s: %d redelivered event(s) ignored", channel.kind, result.duplicates)
    return result


async def _ask_profile(hub: Hub, s: AsyncSession, channel: Channel, sender: Sender) -> None:
    """Channels whose webhooks carry no name (Messenger, Instagram) can look it up; queued
    before the message's delivery so the room is created with the name."""
    if sender.display_name or not hasattr(channel, "fetch_display_name"):
        return
    identity = await repo.get_or_create_identity(
        s,
        sender.channel,
        sender.external_id,
        None,
        repo.opaque_localpart(hub.config.appservice.ghost_prefix, channel.code),
    )
    if identity.display_name:
        return
    conversation = await repo.get_or_create_conversation(s, identity.id)
    await enqueue(
        s,
        FETCH_PROFILE,
        conversation_key(conversation.id),
        {"identity_id": identity.id},
        f"profile:{identity.id}",
    )


async def fetch_profile(hub: Hub, job: Job) -> Finish | None:
    """channel.profile: ask the channel for the customer's name, once per identity."""
    async with hub.sessions() as s:
        identity = await s.get(ChannelIdentity, job.payload["identity_id"])
    if identity is None or identity.display_name:
        return None
    name = await hub.channel(identity.channel).fetch_display_name(identity.external_id)  # type: ignore[attr-defined]
    if not name:
        return None

    async def finish(s: AsyncSession) -> None:
        row = await s.get(ChannelIdentity, identity.id)
        if row is not None and not row.display_name:
            row.display_name = storable(str(name))[:255]

    return finish


async def _related(
    hub: Hub,
    s: AsyncSession,
    channel: Channel,
    sender: Sender,
    event: InboundReaction | InboundEdit,
) -> int:
    """A reaction or an edit: a message row pointing at its target, delivered to Matrix."""
    identity = await repo.get_or_create_identity(
        s,
        sender.channel,
        sender.external_id,
        sender.display_name,
        repo.opaque_localpart(hub.config.appservice.ghost_prefix, channel.code),
    )
    conversation = await repo.get_or_create_conversation(s, identity.id)
    target = await repo.message_by_remote_id(s, sender.channel, event.target_remote_id)
    if target is None:
        log.info("%s: %s for an unknown message ignored", channel.kind, type(event).__name__)
        return 0
    kind = "reaction" if isinstance(event, InboundReaction) else "edit"
    text = event.emoji if isinstance(event, InboundReaction) else event.text
    message = await repo.insert_message(
        s,
        {
            "conversation_id": conversation.id,
            "channel": sender.channel,
            "direction": "in",
            "kind": kind,
            "text": text,
            "remote_id": event.remote_id,
            "reply_to_message_id": target.id,
            "sender_name": sender.display_name,
            "status": "received",
        },
    )
    if message is None:
        return 0
    await enqueue(
        s,
        DELIVER_TO_MATRIX,
        conversation_key(conversation.id),
        {"message_id": message.id},
        f"deliver:{message.id}",
    )
    return 1


async def _status(hub: Hub, s: AsyncSession, channel: Channel, update: StatusUpdate) -> int:
    message = await repo.message_by_remote_id(s, channel.kind, update.remote_id)
    if message is None or message.direction != "out":
        log.info("%s: status %s for unknown message ignored", channel.kind, update.status)
        return 0
    conversation = await s.get(Conversation, message.conversation_id)
    assert conversation is not None
    if update.status == "failed":
        if message.status == "failed":
            return 0
        message.status = "failed"
        if conversation.room_id:
            reason = update.error_text or "the messenger refused the message"
            await enqueue_notice(
                s,
                conversation.room_id,
                f"⚠️ Not delivered to the customer: {reason}"
                + (f" (code {update.error_code})" if update.error_code else ""),
                f"failed:{message.id}",
                reply_to=message.matrix_event_id,
            )
        return 1
    if _STATUS_RANK.get(update.status, 0) <= _STATUS_RANK.get(message.status, 0):
        return 0  # statuses arrive out of order; never go back from read to delivered
    message.status = update.status
    if update.status == "read" and conversation.room_id and message.matrix_event_id:
        await hub.receipts.queue_ghost_receipt(s, conversation, message)
    return 1


async def _start_greeting(hub: Hub, s: AsyncSession, channel: Channel, message: Message) -> None:
    """Answer a messenger's start command (Telegram's /start) with the channel's greeting."""
    text = getattr(channel, "start_greeting", None)
    if not text:
        return
    conversation = await s.get(Conversation, message.conversation_id)
    assert conversation is not None
    await queue_outbound(
        s,
        conversation,
        channel.kind,
        {"kind": "text", "text": text, "sender_name": hub.config.shop.name},
        idempotency=f"start-greeting:{message.id}",
    )


async def set_blocked(
    s: AsyncSession, conversation_id: int, blocked: bool, room_notice: str | None = None
) -> None:
    """Mark or clear "the customer blocked the shop on this channel"; a new message from
    the customer clears it."""
    conversation = await s.get(Conversation, conversation_id)
    assert conversation is not None
    meta = dict(conversation.meta or {})
    if bool(meta.get("blocked")) == blocked:
        return
    meta["blocked"] = blocked
    conversation.meta = meta
    if room_notice and conversation.room_id:
        await enqueue_notice(
            s,
            conversation.room_id,
            room_notice,
            f"blocked:{conversation_id}:{utcnow().isoformat()}",
        )


async def mark_blocked(hub: Hub, channel: Channel, external_id: str, blocked: bool) -> None:
    """A channel learnt that the customer blocked (or unblocked) the shop's account."""
    async with hub.sessions.begin() as s:
        identity = await repo.identity_by_external_id(s, channel.kind, external_id)
        conversation = identity and await repo.conversation_by_identity(s, identity.id)
        if conversation is None:
            return
        notice = (
            f"⛔ The customer blocked the shop on {channel.label}: messages cannot reach them."
            if blocked
            else f"✅ The customer unblocked the shop on {channel.label}."
        )
        await set_blocked(s, conversation.id, blocked, notice)
    hub.worker.wake()


async def _voice_note_reply(hub: Hub, s: AsyncSession, channel: Channel, message: Message) -> None:
    """Ask the customer once a day to write instead, where the channel has such a text."""
    text = getattr(channel, "voice_note_reply", None)
    if not text:
        return
    conversation = await s.get(Conversation, message.conversation_id)
    assert conversation is not None
    meta = dict(conversation.meta or {})
    last = meta.get("voice_reply_at")
    now = utcnow()
    if last and now - datetime.fromisoformat(last) < VOICE_REPLY_INTERVAL:
        return
    meta["voice_reply_at"] = now.isoformat()
    conversation.meta = meta
    await queue_outbound(
        s,
        conversation,
        channel.kind,
        {"kind": "text", "text": text, "sender_name": hub.config.shop.name},
        idempotency=f"voice-reply:{message.id}",
    )
    if conversation.room_id:
        await enqueue_notice(
            s,
            conversation.room_id,
            f"🤖 Sent to the customer (voice note reply): {text}",
            f"voice-reply-notice:{message.id}",
        )
