"""Outbox handlers that write to Matrix: a customer's message as their ghost, bot events."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.outbox import Finish, Job, PermanentFailure
from hub.db import repo
from hub.db.models import MediaFile, Message
from hub.matrix.client import MatrixError

if TYPE_CHECKING:
    from hub.hub import Hub

log = logging.getLogger(__name__)

_MSGTYPES = {"image": "m.image", "file": "m.file", "video": "m.video", "audio": "m.audio"}


def message_content(msg: Message, mxc: str | None, reply_event: str | None) -> dict[str, Any]:
    """The m.room.message content for a customer's message (captions as in Matrix 1.10)."""
    if msg.kind == "text" or not msg.media:
        content: dict[str, Any] = {"msgtype": "m.text", "body": msg.text or ""}
    else:
        media = msg.media
        content = {
            "msgtype": _MSGTYPES.get(msg.kind, "m.file"),
            "body": msg.text or media["filename"],
            "filename": media["filename"],
            "url": mxc,
            "info": {"mimetype": media["mimetype"], "size": media["size"]},
        }
    if reply_event:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_event}}
    return content


class MatrixDelivery:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def deliver_inbound(self, job: Job) -> Finish | None:
        """matrix.deliver: put a customer's message into their portal room as their ghost."""
        hub = self.hub
        async with hub.sessions() as s:
            msg = await s.get(Message, job.payload["message_id"])
            if msg is None:
                raise PermanentFailure("message no longer exists (erased?)")
            if msg.matrix_event_id:
                return None
            conversation, identity = await repo.conversation_with_identity(s, msg.conversation_id)
            reply_event = None
            if msg.reply_to_message_id:
                target = await s.get(Message, msg.reply_to_message_id)
                reply_event = target.matrix_event_id if target else None
        channel = hub.channel(identity.channel)
        room_id = await hub.portals.ensure_room(conversation, identity, channel.label)
        ghost = await hub.portals.ensure_ghost(identity)
        mxc = await self._upload_media(msg, ghost)
        content = message_content(msg, mxc, reply_event)
        txn = f"hub-msg-{msg.id}"
        try:
            event_id = await hub.matrix.send_event(
                room_id, "m.room.message", content, txn, as_user=ghost
            )
        except MatrixError as exc:
            if exc.errcode != "M_FORBIDDEN":
                raise
            # The ghost left or was kicked: bring it back, then send once more.
            await hub.matrix.invite(room_id, ghost)
            await hub.matrix.join(room_id, ghost)
            event_id = await hub.matrix.send_event(
                room_id, "m.room.message", content, txn, as_user=ghost
            )
        media_id = (msg.media or {}).get("media_id")

        async def finish(s: AsyncSession) -> None:
            await s.execute(
                update(Message)
                .where(Message.id == msg.id)
                .values(matrix_event_id=event_id, status="delivered")
            )
            if mxc and media_id:
                await s.execute(
                    update(MediaFile).where(MediaFile.id == media_id).values(mxc_uri=mxc)
                )
            await channel.status_changed(identity.external_id, [msg.id], "delivered")

        return finish

    async def _upload_media(self, msg: Message, ghost: str) -> str | None:
        if not msg.media:
            return None
        media_id = msg.media.get("media_id")
        if msg.media.get("mxc"):
            return str(msg.media["mxc"])
        if not media_id:
            raise PermanentFailure("media message without a stored file")
        async with self.hub.sessions() as s:
            row = await repo.media_by_id(s, media_id)
        if row is None:
            raise PermanentFailure("media file no longer exists (erased?)")
        if row.mxc_uri:
            return row.mxc_uri
        data = await self.hub.media.read(media_id)
        return await self.hub.matrix.upload(data, row.mimetype, row.filename, as_user=ghost)

    async def send_room_event(self, job: Job) -> Finish | None:
        """matrix.send: an event from the bot (or a ghost); the job id makes the txn id."""
        p = job.payload
        await self.hub.matrix.send_event(
            p["room_id"], p["event_type"], p["content"], f"hub-job-{job.id}", as_user=p["as_user"]
        )
        return None

    async def on_deliver_dead(self, job: Job, reason: str) -> None:
        log.error(
            "customer message %s could not be put into Matrix: %s",
            job.payload.get("message_id"),
            reason,
        )
