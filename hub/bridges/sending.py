"""Jobs that talk to a customer's channel: messages (channel.send), advisers' edits and
redactions of them (channel.edit, channel.delete), advisers' reactions (channel.react) and
the customer's name (channel.profile)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import aiohttp

from hub.bridges.base import Channels
from hub.core.media import MediaStore, image_type
from hub.core.text import storable
from hub.core.types import Button, MediaRef, OutboundMessage
from hub.db import conversations, media, outbound
from hub.db.database import Database, Tx
from hub.db.messages import MessageContext, context_of, message_context, preload_message
from hub.db.models import ChannelIdentity, Message
from hub.errors import BLOCKED, ExternalError
from hub.i18n import _
from hub.jobs import kinds
from hub.jobs.job import Finish, Job, PermanentFailure, handles
from hub.matrix.client import MatrixClient
from hub.net import read_capped

log = logging.getLogger(__name__)

IMAGE_FETCH_SECONDS = 15


def _buttons(data: dict[str, Any] | None) -> tuple[Button, ...]:
    rows = (data or {}).get("buttons") or []
    return tuple(Button(b["id"], b["title"], b.get("description")) for b in rows)


def with_button_titles(text: str | None, buttons: tuple[Button, ...]) -> str:
    """The text for a channel without buttons: the choices written out."""
    choices = " / ".join(b.title for b in buttons)
    return f"{text}\n\n{choices}" if text else choices


class ChannelSender:
    def __init__(
        self,
        db: Database,
        channels: Channels,
        store: MediaStore,
        matrix: MatrixClient,
        http: aiohttp.ClientSession,
        max_fetch_bytes: int,
    ) -> None:
        self.db = db
        self.channels = channels
        self.store = store
        self.matrix = matrix
        self.http = http
        self.max_fetch_bytes = max_fetch_bytes

    @handles(kinds.CHANNEL_SEND, on_dead="on_dead", preload=preload_message)
    async def send(self, job: Job) -> Finish | None:
        message_id = job.payload["message_id"]
        found = context_of(job.context, message_id) or await self.db.read(
            message_context, message_id
        )
        if found is None:
            raise PermanentFailure(_("message no longer exists (erased?)"))
        msg, conversation, identity = found.message, found.conversation, found.identity
        if msg.status in ("sent", "delivered", "read", "cancelled"):
            return None  # sent before this attempt, or cancelled (hub.db.newsletter)
        channel = self.channels.channel(identity.channel)
        reply_remote = found.target.remote_id if found.target else None
        out = await self._outbound(msg, identity, reply_remote, conversation.last_inbound_at)
        if out.buttons and not channel.capabilities.buttons:
            out = _without_buttons(out)
        remote_id = await channel.send(out)
        unblock = conversation.id if (conversation.meta or {}).get("blocked") else None

        def finish(tx: Tx) -> None:
            outbound.mark_sent(tx, msg.id, remote_id, unblock)

        return finish

    async def _outbound(
        self, msg: Message, identity: ChannelIdentity, reply_remote: str | None, last_inbound: Any
    ) -> OutboundMessage:
        media_ref = await self._local_media(msg)
        kind = msg.kind if media_ref or not msg.media else "text"  # a product image that failed
        return OutboundMessage(
            message_id=msg.id,
            conversation_id=msg.conversation_id,
            external_id=identity.external_id,
            kind=kind,  # type: ignore[arg-type]
            text=msg.text,
            html=msg.html,
            media=media_ref,
            reply_to_remote_id=reply_remote,
            sender_mxid=msg.sender_mxid,
            sender_name=msg.sender_name,
            last_inbound_at=last_inbound,
            data=msg.data,
            buttons=_buttons(msg.data),
            list_button=(msg.data or {}).get("list_button"),
        )

    async def _local_media(self, msg: Message) -> MediaRef | None:
        """Channels send bytes: fetch an adviser's Matrix media (or a product picture) into
        the hub's store once."""
        if not msg.media:
            return None
        m = dict(msg.media)
        if not m.get("media_id"):
            if m.get("url"):
                fetched = await self._fetch_image(m["url"])
                if fetched is None:
                    # Sent as text: a product card without its picture beats no card.
                    await self.db.write(
                        conversations.update_message, msg.id, kind="text", media=None
                    )
                    return None
                data, ctype = fetched
            else:
                data, ctype = await self.matrix.download(m["mxc"], max_bytes=self.max_fetch_bytes)
                if isinstance(m.get("file"), dict):
                    # From an encrypted room: the download is ciphertext. (Imported here:
                    # nio's crypto costs memory a hub without encryption need not pay.)
                    from hub.matrix.crypto.media import decrypt_file

                    data, ctype = decrypt_file(data, m["file"]), m.get("mimetype") or ctype
            mimetype = m.get("mimetype") or ctype
            stored = await self.store.write(data, m["filename"], mimetype)
            m = await self.db.write(
                media.record_file, stored, msg.conversation_id, msg.id, m, m.get("mxc")
            )
        return MediaRef(m["filename"], m["mimetype"], int(m["size"]), m["media_id"], m.get("mxc"))

    async def _fetch_image(self, url: str) -> tuple[bytes, str] | None:
        """A product picture from the shop's site; None when it cannot be had (logged)."""
        cap = self.max_fetch_bytes

        def too_big() -> ExternalError:
            return ExternalError(f"more than {cap} bytes", permanent=True)

        timeout = aiohttp.ClientTimeout(total=IMAGE_FETCH_SECONDS)
        try:
            async with self.http.get(url, timeout=timeout) as resp:
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
        await self.db.write(
            outbound.send_failed, job.payload["message_id"], reason, code == BLOCKED
        )

    @handles(kinds.CHANNEL_EDIT, on_dead="on_change_dead", preload=preload_message)
    async def edit(self, job: Job) -> Finish | None:
        """An adviser edited a message the customer got: the channel shows the new text."""
        found = await self._sent(job)
        if found is None:
            return None
        msg, identity = found.message, found.identity
        text, html = job.payload["text"], job.payload.get("html")
        channel = self.channels.channel(identity.channel)
        if channel.capabilities.edits:
            assert msg.remote_id is not None
            await channel.edit_message(_edited(msg, identity, text, html), msg.remote_id)
        event_id = job.payload["event_id"]

        def finish(tx: Tx) -> None:
            if channel.capabilities.edits:
                outbound.record_edit(tx, msg.id, text, html, event_id)

        return finish

    @handles(kinds.CHANNEL_DELETE, on_dead="on_change_dead", preload=preload_message)
    async def delete(self, job: Job) -> Finish | None:
        """An adviser redacted a message the customer got: remove it from their chat."""
        found = await self._sent(job)
        if found is None:
            return None
        msg, identity = found.message, found.identity
        channel = self.channels.channel(identity.channel)
        if not channel.capabilities.deletes:
            return None
        assert msg.remote_id is not None
        await channel.delete_message(identity.external_id, msg.remote_id, msg.id)

        def finish(tx: Tx) -> None:
            outbound.record_delete(tx, msg.id)

        return finish

    async def _sent(self, job: Job) -> MessageContext | None:
        """The message an edit or deletion is about, once it reached the customer; None
        when there is nothing to change (erased, never sent, deleted already)."""
        message_id = job.payload["message_id"]
        found = context_of(job.context, message_id) or await self.db.read(
            message_context, message_id
        )
        if found is None or not found.message.remote_id:
            return None
        if found.message.status not in ("sent", "delivered", "read"):
            return None
        return found

    async def on_change_dead(self, job: Job, reason: str, code: str | None) -> None:
        """An edit or deletion the channel refused: the room learns the customer still sees
        the message as it was."""
        what = "edit" if job.kind == kinds.CHANNEL_EDIT else "delete"
        await self.db.write(
            outbound.change_failed, job.payload["message_id"], what, reason, job.payload["event_id"]
        )

    @handles(kinds.CHANNEL_REACT)
    async def react(self, job: Job) -> None:
        """An adviser's reaction to a customer's message."""
        found = await self.db.read(outbound.reaction_target, job.payload["target_message_id"])
        if found is None:
            return None
        target, identity = found
        channel = self.channels.channel(identity.channel)
        if channel.capabilities.reactions:
            assert target.remote_id is not None
            await channel.send_reaction(
                identity.external_id, target.remote_id, job.payload["emoji"]
            )
        return None

    @handles(kinds.CHANNEL_PROFILE)
    async def fetch_profile(self, job: Job) -> Finish | None:
        """Ask the channel for the customer's name, once per identity."""
        identity_id = job.payload["identity_id"]
        identity = await self.db.read(conversations.identity, identity_id)
        if identity is None or identity.display_name:
            return None
        name = await self.channels.channel(identity.channel).fetch_display_name(
            identity.external_id
        )
        if not name:
            return None

        def finish(tx: Tx) -> None:
            outbound.set_display_name(tx, identity_id, storable(str(name)))

        return finish


def _edited(
    msg: Message, identity: ChannelIdentity, text: str, html: str | None
) -> OutboundMessage:
    """The message as the customer should now see it. Its file stays what was sent (no
    media is fetched): an edit changes the words only."""
    m = msg.media or {}
    media = (
        MediaRef(m["filename"], m["mimetype"], int(m["size"]), m["media_id"], m.get("mxc"))
        if m.get("media_id")
        else None
    )
    return OutboundMessage(
        message_id=msg.id,
        conversation_id=msg.conversation_id,
        external_id=identity.external_id,
        kind=msg.kind if media else "text",  # type: ignore[arg-type]
        text=text,
        html=html,
        media=media,
        reply_to_remote_id=None,
        sender_mxid=msg.sender_mxid,
        sender_name=msg.sender_name,
        data=msg.data,
        buttons=_buttons(msg.data),
    )


def _without_buttons(out: OutboundMessage) -> OutboundMessage:
    return replace(out, text=with_button_titles(out.text, out.buttons), html=None, buttons=())
