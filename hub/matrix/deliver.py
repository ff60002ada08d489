"""Outbox handlers that write to Matrix: a customer's message as their ghost, bot events."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.engine import Connection

from hub.core.outbox import Job, PermanentFailure, SqlFinish
from hub.core.types import MediaRef
from hub.db import hot, repo
from hub.db.engine import database_of
from hub.db.models import ChannelIdentity, Message
from hub.matrix.client import MatrixError
from hub.matrix.render import edit_content, message_contents, reaction_content, with_reply

if TYPE_CHECKING:
    from hub.bridges.base import Channel
    from hub.hub import Hub

log = logging.getLogger(__name__)


def preload_delivery(conn: Connection, payload: dict[str, Any]) -> hot.Delivery | None:
    """matrix.deliver's first read, done where the job is leased (OutboxWorker.register)."""
    return hot.delivery(conn, payload["message_id"])


class MatrixDelivery:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def deliver_inbound(self, job: Job) -> SqlFinish | None:
        """matrix.deliver: put a customer's message into their portal room as their ghost."""
        hub = self.hub
        found = job.context if isinstance(job.context, hot.Delivery) else None
        if found is None or found.message.id != job.payload["message_id"]:
            found = await database_of(hub.sessions).read(hot.delivery, job.payload["message_id"])
        if found is None:
            raise PermanentFailure("message no longer exists (erased?)")
        msg, conversation, identity, target = (
            found.message,
            found.conversation,
            found.identity,
            found.target,
        )
        if msg.matrix_event_id:
            return None
        channel = hub.channel(identity.channel)
        room_id = await hub.portals.ensure_room(conversation, identity, channel.label)
        ghost = await hub.portals.ensure_ghost(identity)
        target_event = target.matrix_event_id if target else None
        media_id, mxc = None, None
        if msg.kind == "reaction":
            event_id = await self._reaction(room_id, ghost, msg, target, identity)
        elif msg.kind == "edit":
            if not target_event:
                raise PermanentFailure("the edited message never reached Matrix")
            event_id = await self._send(
                room_id,
                ghost,
                "m.room.message",
                edit_content(target_event, msg.text or ""),
                f"hub-msg-{msg.id}",
            )
        else:
            media_id, mxc = await self._media(msg, ghost, channel)
            contents = message_contents(msg.kind, msg.text, msg.media, msg.data, mxc)
            event_ids = [
                await self._send(
                    room_id,
                    ghost,
                    "m.room.message",
                    with_reply(content, target_event if n == 0 else None),
                    f"hub-msg-{msg.id}" + (f"-{n}" if n else ""),
                )
                for n, content in enumerate(contents)
            ]
            event_id = event_ids[0]

        media = {**msg.media, "media_id": media_id, "mxc": mxc} if media_id and msg.media else None

        def finish(conn: Connection) -> None:
            hot.mark_delivered(conn, msg.id, event_id, media, media_id, mxc)

        async def delivered() -> None:
            await channel.status_changed(identity.external_id, [msg.id], "delivered")

        return SqlFinish(finish, delivered)

    async def _send(
        self, room_id: str, ghost: str, event_type: str, content: dict[str, Any], txn: str
    ) -> str:
        try:
            return await self.hub.matrix.send_event(
                room_id, event_type, content, txn, as_user=ghost
            )
        except MatrixError as exc:
            if exc.errcode != "M_FORBIDDEN":
                raise
            # The ghost left or was kicked: bring it back, then send once more.
            await self.hub.matrix.invite(room_id, ghost)
            await self.hub.matrix.join(room_id, ghost)
            return await self.hub.matrix.send_event(
                room_id, event_type, content, txn, as_user=ghost
            )

    async def _reaction(
        self,
        room_id: str,
        ghost: str,
        msg: Message,
        target: Message | None,
        identity: ChannelIdentity,
    ) -> str:
        if target is None or not target.matrix_event_id:
            raise PermanentFailure("the message reacted to never reached Matrix")
        if msg.text:
            return await self._send(
                room_id,
                ghost,
                "m.reaction",
                reaction_content(target.matrix_event_id, msg.text),
                f"hub-msg-{msg.id}",
            )
        # Removal: redact the ghost's earlier reaction on that message.
        async with self.hub.sessions() as s:
            earlier = await repo.latest_reaction(s, msg.conversation_id, target.id, before=msg.id)
        if earlier is None or not earlier.matrix_event_id:
            raise PermanentFailure("no earlier reaction to remove")
        return await self.hub.matrix.redact(
            room_id, earlier.matrix_event_id, f"hub-msg-{msg.id}", as_user=ghost
        )

    async def _media(
        self, msg: Message, ghost: str, channel: Channel
    ) -> tuple[str | None, str | None]:
        """(local media id, mxc) of a media message: fetched from the provider once, stored,
        uploaded to the homeserver's media repository as the ghost."""
        m = msg.media
        if not m:
            return None, None
        if m.get("mxc"):
            return m.get("media_id"), str(m["mxc"])
        media_id = m.get("media_id")
        if media_id is None:
            if not m.get("remote_id"):
                raise PermanentFailure("media message without a file")
            ref = MediaRef(
                m["filename"], m["mimetype"], int(m.get("size") or 0), remote_id=m["remote_id"]
            )
            data, mimetype = await channel.fetch_media(ref)
            async with self.hub.sessions.begin() as s:
                row = await self.hub.media.save(
                    s, data, m["filename"], mimetype or m["mimetype"], msg.conversation_id
                )
                media_id = row.id
                await s.execute(
                    update(Message)
                    .where(Message.id == msg.id)
                    .values(
                        media={**m, "media_id": row.id, "size": row.size, "mimetype": row.mimetype}
                    )
                )
            m = {**m, "media_id": media_id, "size": row.size, "mimetype": row.mimetype}
            msg.media = m
        async with self.hub.sessions() as s:
            row = await repo.media_by_id(s, media_id)
        if row is None:
            raise PermanentFailure("media file no longer exists (erased?)")
        if row.mxc_uri:
            return media_id, row.mxc_uri
        data = await self.hub.media.read(media_id)
        mxc = await self.hub.matrix.upload(data, row.mimetype, row.filename, as_user=ghost)
        return media_id, mxc

    async def send_room_event(self, job: Job) -> None:
        """matrix.send: an event from the bot (or a ghost); the job id makes the txn id."""
        p = job.payload
        if "state_key" in p:
            await self.hub.matrix.put_state(
                p["room_id"], p["event_type"], p["content"], p["state_key"]
            )
            return None
        await self.hub.matrix.send_event(
            p["room_id"], p["event_type"], p["content"], f"hub-job-{job.id}", as_user=p["as_user"]
        )
        return None

    async def on_deliver_dead(self, job: Job, reason: str, code: str | None) -> None:
        log.error(
            "customer message %s could not be put into Matrix: %s",
            job.payload.get("message_id"),
            reason,
        )
