"""Jobs that write to Matrix: a customer's message as their ghost, events of the bot."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hub.bridges.base import Channel, Channels
from hub.core.media import MediaStore
from hub.core.types import MediaRef
from hub.db import conversations, delivery, media
from hub.db.database import Database, Tx
from hub.db.messages import context_of, message_context, preload_message
from hub.db.models import Message
from hub.jobs import kinds
from hub.jobs.job import Finish, Job, PermanentFailure, handles
from hub.matrix.client import MatrixClient, MatrixError
from hub.matrix.portal import Portals
from hub.matrix.render import (
    STATUS_KEY,
    edit_content,
    message_contents,
    reaction_content,
    with_reply,
)

if TYPE_CHECKING:
    from hub.matrix.crypto.media import EncryptedUploads

log = logging.getLogger(__name__)


class MatrixDelivery:
    def __init__(
        self,
        db: Database,
        matrix: MatrixClient,
        portals: Portals,
        channels: Channels,
        store: MediaStore,
        encrypted_uploads: EncryptedUploads | None = None,
    ) -> None:
        """`encrypted_uploads`: with encryption on, files for encrypted rooms are uploaded
        encrypted (the homeserver never holds the customer's photo in clear)."""
        self.db = db
        self.matrix = matrix
        self.portals = portals
        self.channels = channels
        self.store = store
        self.encrypted_uploads = encrypted_uploads

    @handles(kinds.MATRIX_DELIVER, on_dead="on_deliver_dead", preload=preload_message)
    async def deliver_inbound(self, job: Job) -> Finish | None:
        """Put a customer's message into their portal room as their ghost."""
        found = context_of(job.context, job.payload["message_id"])
        if found is None:
            found = await self.db.read(message_context, job.payload["message_id"])
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
        channel = self.channels.channel(identity.channel)
        room_id = await self.portals.ensure_room(conversation, identity, channel.label)
        ghost = await self.portals.ensure_ghost(identity)
        target_event = target.matrix_event_id if target else None
        media_id, mxc, file = None, None, None
        if msg.kind == "reaction":
            event_id = await self._reaction(room_id, ghost, msg, target)
        elif msg.kind == "edit":
            if not target_event:
                raise PermanentFailure("the edited message never reached Matrix")
            content = edit_content(target_event, msg.text or "")
            event_id = await self._send(
                room_id, ghost, "m.room.message", content, f"hub-msg-{msg.id}"
            )
        else:
            media_id, mxc, file = await self._media(msg, ghost, channel, room_id)
            contents = message_contents(msg.kind, msg.text, msg.media, msg.data, mxc, file)
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
        new_media = (
            {**msg.media, "media_id": media_id, "mxc": mxc} if media_id and msg.media else None
        )
        if new_media is not None and file is not None:
            new_media["file"] = file

        def finish(tx: Tx) -> None:
            delivery.mark_delivered(tx, msg.id, event_id, new_media, media_id, mxc)
            tx.after_commit(
                lambda: channel.status_changed(identity.external_id, [msg.id], "delivered")
            )

        return finish

    async def _send(
        self, room_id: str, ghost: str, event_type: str, content: dict[str, Any], txn: str
    ) -> str:
        try:
            return await self.matrix.send_event(room_id, event_type, content, txn, as_user=ghost)
        except MatrixError as exc:
            if exc.errcode != "M_FORBIDDEN":
                raise
            # The ghost left or was kicked: bring it back, then send once more.
            await self.matrix.invite(room_id, ghost)
            await self.matrix.join(room_id, ghost)
            return await self.matrix.send_event(room_id, event_type, content, txn, as_user=ghost)

    async def _reaction(
        self, room_id: str, ghost: str, msg: Message, target: Message | None
    ) -> str:
        if target is None or not target.matrix_event_id:
            raise PermanentFailure("the message reacted to never reached Matrix")
        if msg.text:
            content = reaction_content(target.matrix_event_id, msg.text)
            return await self._send(room_id, ghost, "m.reaction", content, f"hub-msg-{msg.id}")
        # Removal: redact the ghost's earlier reaction on that message.
        earlier = await self.db.read(
            delivery.latest_reaction, msg.conversation_id, target.id, msg.id
        )
        if earlier is None or not earlier.matrix_event_id:
            raise PermanentFailure("no earlier reaction to remove")
        return await self.matrix.redact(
            room_id, earlier.matrix_event_id, f"hub-msg-{msg.id}", as_user=ghost
        )

    async def _media(
        self, msg: Message, ghost: str, channel: Channel, room_id: str
    ) -> tuple[str | None, str | None, dict[str, Any] | None]:
        """(local media id, mxc, encrypted file or None) of a media message: fetched from
        the provider once, stored, uploaded to the homeserver's media repository as the
        ghost (encrypted for an encrypted room)."""
        m = msg.media
        if not m:
            return None, None, None
        if m.get("file"):
            return m.get("media_id"), str(m["mxc"]), dict(m["file"])
        uploads = self.encrypted_uploads
        encrypted = uploads is not None and await uploads.room_encrypted(room_id)
        if m.get("mxc") and not encrypted:
            return m.get("media_id"), str(m["mxc"]), None
        media_id = m.get("media_id")
        if media_id is None:
            if not m.get("remote_id"):
                raise PermanentFailure("media message without a file")
            ref = MediaRef(
                m["filename"], m["mimetype"], int(m.get("size") or 0), remote_id=m["remote_id"]
            )
            data, mimetype = await channel.fetch_media(ref)
            stored = await self.store.write(data, m["filename"], mimetype or m["mimetype"])
            msg.media = await self.db.write(
                media.record_file, stored, msg.conversation_id, msg.id, m
            )
            media_id = stored.media_id
        row = await self.db.read(media.media_by_id, media_id)
        if row is None:
            raise PermanentFailure("media file no longer exists (erased?)")
        if encrypted and uploads is not None:
            file = await uploads.upload(await self.store.read(media_id), as_user=ghost)
            # The first copy is the one a refused photo's deletion removes.
            await self.db.write(media.set_mxc, media_id, file["url"])
            return media_id, file["url"], file
        if row.mxc_uri:
            return media_id, row.mxc_uri, None
        data = await self.store.read(media_id)
        mxc = await self.matrix.upload(data, row.mimetype, row.filename, as_user=ghost)
        await self.db.write(media.set_mxc, media_id, mxc)
        return media_id, mxc, None

    @handles(kinds.MATRIX_SEND)
    async def send_room_event(self, job: Job) -> None:
        """An event from the bot (or a ghost); the job id makes the transaction id."""
        p = job.payload
        if "state_key" in p:
            await self.matrix.put_state(p["room_id"], p["event_type"], p["content"], p["state_key"])
            return None
        await self.matrix.send_event(
            p["room_id"], p["event_type"], p["content"], f"hub-job-{job.id}", as_user=p["as_user"]
        )
        return None

    @handles(kinds.MATRIX_NOTICE)
    async def send_conversation_notice(self, job: Job) -> None:
        """A notice into a conversation's room (see hub.db.notices.conversation_notice)."""
        conversation_id = job.payload["conversation_id"]
        conversation, _ = await self.db.read(
            conversations.conversation_with_identity, conversation_id
        )
        if not conversation.room_id:
            log.warning("notice for conversation %s dropped: it has no room", conversation_id)
            return None
        content = {"msgtype": "m.notice", "body": job.payload["text"]}
        if job.payload.get("status"):
            content[STATUS_KEY] = job.payload["status"]
        await self.matrix.send_event(
            conversation.room_id, "m.room.message", content, f"hub-job-{job.id}"
        )
        return None

    async def on_deliver_dead(self, job: Job, reason: str, code: str | None) -> None:
        log.error(
            "customer message %s could not be put into Matrix: %s",
            job.payload.get("message_id"),
            reason,
        )
