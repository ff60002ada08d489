"""Outbox handlers that write to a customer's channel: messages ("channel.send") and
advisers' reactions ("channel.react")."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.bot import enqueue_notice
from hub.core.ingest import set_blocked
from hub.core.media import image_type
from hub.core.outbox import Finish, Job, PermanentFailure, RetryLater
from hub.core.types import Button, MediaRef, OutboundMessage
from hub.db import repo
from hub.db.models import Conversation, Message
from hub.errors import BLOCKED, ExternalError
from hub.net import read_capped

if TYPE_CHECKING:
    from hub.hub import Hub

log = logging.getLogger(__name__)

SEND_REACTION = "channel.react"


def _buttons(data: dict[str, Any] | None) -> tuple[Button, ...]:
    rows = (data or {}).get("buttons") or []
    return tuple(Button(b["id"], b["title"], b.get("description")) for b in rows)


class ChannelSender:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def send(self, job: Job) -> Finish | None:
        hub = self.hub
        async with hub.sessions() as s:
            msg = await s.get(Message, job.payload["message_id"])
            if msg is None:
                raise PermanentFailure("message no longer exists (erased?)")
            if msg.status in ("sent", "delivered", "read"):
                return None
            conversation, identity = await repo.conversation_with_identity(s, msg.conversation_id)
            reply_remote = None
            if msg.reply_to_message_id:
                target = await s.get(Message, msg.reply_to_message_id)
                reply_remote = target.remote_id if target else None
        media = await self._local_media(msg)
        kind = msg.kind if media or not msg.media else "text"  # a product image that failed
        out = OutboundMessage(
            message_id=msg.id,
            conversation_id=msg.conversation_id,
            external_id=identity.external_id,
            kind=kind,  # type: ignore[arg-type]
            text=msg.text,
            html=msg.html,
            media=media,
            reply_to_remote_id=reply_remote,
            sender_mxid=msg.sender_mxid,
            sender_name=msg.sender_name,
            last_inbound_at=conversation.last_inbound_at,
            data=msg.data,
            buttons=_buttons(msg.data),
            list_button=(msg.data or {}).get("list_button"),
        )
        try:
            remote_id = await hub.channel(identity.channel).send(out)
        except ExternalError as exc:
            if exc.permanent:
                raise PermanentFailure(exc.human, exc.code) from exc
            raise RetryLater(exc.human, exc.retry_after) from exc

        was_blocked = bool((conversation.meta or {}).get("blocked"))

        async def finish(s: AsyncSession) -> None:
            await s.execute(
                update(Message)
                .where(Message.id == msg.id, Message.status.in_(("pending", "failed")))
                .values(remote_id=remote_id, status="sent")
            )
            if was_blocked:  # it went through: the customer no longer blocks the shop
                await set_blocked(s, conversation.id, False)

        return finish

    async def _local_media(self, msg: Message) -> MediaRef | None:
        """Channels send bytes: fetch an adviser's Matrix media into the hub's store once."""
        if not msg.media:
            return None
        m = dict(msg.media)
        if not m.get("media_id"):
            cap = self.hub.config.channels.webchat.max_upload_bytes * 5
            if m.get("url"):
                fetched = await self._fetch_image(m["url"], cap)
                if fetched is None:
                    # Sent as text: a product card without its picture beats no card.
                    async with self.hub.sessions.begin() as s:
                        await s.execute(
                            update(Message)
                            .where(Message.id == msg.id)
                            .values(kind="text", media=None)
                        )
                    return None
                data, ctype = fetched
            else:
                data, ctype = await self.hub.matrix.download(m["mxc"], max_bytes=cap)
            mimetype = m.get("mimetype") or ctype
            async with self.hub.sessions.begin() as s:
                row = await self.hub.media.save(
                    s, data, m["filename"], mimetype, msg.conversation_id, mxc=m.get("mxc")
                )
                m |= {"media_id": row.id, "size": row.size, "mimetype": mimetype}
                await s.execute(update(Message).where(Message.id == msg.id).values(media=m))
        return MediaRef(m["filename"], m["mimetype"], int(m["size"]), m["media_id"], m.get("mxc"))

    async def _fetch_image(self, url: str, cap: int) -> tuple[bytes, str] | None:
        """A product picture from the shop's site; None when it cannot be had (logged)."""

        def too_big() -> ExternalError:
            return ExternalError(f"more than {cap} bytes", permanent=True)

        try:
            async with self.hub.http.get(url, timeout=aiohttp.ClientTimeout(total=15)) as resp:
                if resp.status != 200:
                    log.warning("product image %s: HTTP %s", url, resp.status)
                    return None
                data = await read_capped(resp, cap, too_big)
        except ExternalError as exc:
            log.warning("product image %s: %s", url, exc.human)
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("product image %s could not be fetched: %r", url, exc)
            return None
        mimetype = image_type(data)
        if mimetype is None:
            log.warning("product image %s is not a PNG/JPEG/GIF/WebP image", url)
            return None
        return data, mimetype

    async def on_dead(self, job: Job, reason: str, code: str | None) -> None:
        """Tell the advisers in plain words; mark a conversation whose customer blocked us."""
        async with self.hub.sessions.begin() as s:
            msg = await s.get(Message, job.payload["message_id"])
            if msg is None:
                return
            msg.status = "failed"
            conversation = await s.get(Conversation, msg.conversation_id)
            assert conversation is not None
            if code == BLOCKED:
                conversation.meta = {**(conversation.meta or {}), "blocked": True}
            if conversation.room_id:
                await enqueue_notice(
                    s,
                    conversation.room_id,
                    f"⚠️ Not delivered to the customer: {reason}",
                    f"undelivered:{msg.id}",
                    reply_to=msg.matrix_event_id,
                )
        self.hub.worker.wake()

    async def react(self, job: Job) -> Finish | None:
        """channel.react: an adviser's reaction to a customer's message."""
        p = job.payload
        async with self.hub.sessions() as s:
            target = await s.get(Message, p["target_message_id"])
            if target is None or not target.remote_id:
                return None
            _, identity = await repo.conversation_with_identity(s, target.conversation_id)
        channel = self.hub.channel(identity.channel)
        if not channel.capabilities.reactions:
            return None
        try:
            await channel.send_reaction(identity.external_id, target.remote_id, p["emoji"])
        except ExternalError as exc:
            if exc.permanent:
                raise PermanentFailure(exc.human) from exc
            raise RetryLater(exc.human, exc.retry_after) from exc
        return None
