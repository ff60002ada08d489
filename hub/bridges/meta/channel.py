"""Messenger and Instagram as hub channels: one implementation, two configurations.

Webhook (hub.bridges.webhooks): X-Hub-Signature-256 with the channel's app secret over the
raw body (before any parsing) → JSON → `object` must be this channel's → pure mapping →
stored → "EVENT_RECEIVED". Nothing slow happens there: attachments are fetched later by a
job through fetch_media, and customer names by another (fetch_display_name).

Sending: inside 24 h of the customer's last message as RESPONSE; after that, with
`human_agent_tag`, as MESSAGE_TAG HUMAN_AGENT up to 7 days; otherwise a permanent
ExternalError whose text the advisers see in the room.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from aiohttp import web

from hub.bridges.base import Capabilities, Channel, ChannelDeps, Refusal
from hub.bridges.http import meta_verification, verify_hub_signature
from hub.bridges.meta.client import MetaClient
from hub.bridges.meta.mapping import (
    WEBHOOK_OBJECTS,
    attachment_type,
    html_to_text,
    messaging_fields,
    parse_webhook,
    quick_replies,
    reaction_body,
    split_text,
    utf8_len,
    window_closed_text,
)
from hub.config import MetaPageConfig
from hub.core.types import MediaRef, OutboundMessage, Parsed
from hub.db.models import utcnow
from hub.errors import WINDOW_CLOSED, ExternalError
from hub.i18n import _

log = logging.getLogger(__name__)

# Send API attachments may be up to 25 MB (images 8 MB: Meta refuses those itself).
MAX_UPLOAD_BYTES = 25 * 1024 * 1024


class MetaChannel(Channel):
    """The shared implementation; subclasses set the channel's identity and text limit."""

    # Reactions are Send API sender actions (react / unreact). The Send API has no way to
    # edit or delete a message the page sent.
    capabilities = Capabilities(buttons=True, reactions=True)
    reply_window = timedelta(hours=24)
    looks_up_names = True
    text_limit = 2000
    text_measure: Callable[[str], int] = staticmethod(len)

    def __init__(self, deps: ChannelDeps, config: MetaPageConfig) -> None:
        super().__init__(deps)
        self.config = config
        self.client = MetaClient(deps.http, config, self.kind)
        self.webhook_object = WEBHOOK_OBJECTS[self.kind]

    def subscription_challenge(self, query: Mapping[str, str]) -> web.Response:
        return meta_verification(query, self.config.verify_token, self.kind)

    def verify(self, raw: bytes, headers: Mapping[str, str]) -> Refusal | None:
        header = headers.get("X-Hub-Signature-256")
        if verify_hub_signature(raw, header, self.config.app_secret):
            return None
        why = "wrong" if header else "missing"
        return Refusal(
            403 if header else 401,
            "invalid signature",
            f"{self.kind} webhook refused: {why} X-Hub-Signature-256",
        )

    def parse(self, doc: dict[str, Any]) -> Parsed | Refusal:
        if doc.get("object") != self.webhook_object:
            # A webhook subscription pointing at the wrong endpoint: make it visible.
            return Refusal(
                400,
                f"expected object {self.webhook_object!r}",
                f"{self.kind} webhook refused: object {doc.get('object')!r}, expected "
                f"{self.webhook_object!r} (check the app's webhook settings)",
            )
        return parse_webhook(doc, self.kind)

    def acknowledgement(self) -> web.Response:
        return web.Response(text="EVENT_RECEIVED")

    async def send(self, message: OutboundMessage) -> str:
        if message.kind == "template":
            raise ExternalError(
                _("templates cannot be sent on {channel}").format(channel=_(self.label)),
                permanent=True,
            )
        now = utcnow()
        fields = messaging_fields(message.last_inbound_at, now, self.config.human_agent_tag)
        if fields is None:
            assert message.last_inbound_at is not None
            human = window_closed_text(
                message.last_inbound_at, now, self.config.human_agent_tag, self.kind
            )
            raise ExternalError(human, permanent=True, code=WINDOW_CLOSED)
        text = html_to_text(message.html) if message.html else (message.text or "")
        parts = split_text(text, self.text_limit, self.text_measure) if text.strip() else []
        bodies: list[dict[str, Any]] = []
        if message.media is not None:
            bodies.append({"attachment": await self._upload(message.media)})
        bodies += [{"text": part} for part in parts]
        if not bodies:
            raise ExternalError(_("the message is empty"), permanent=True)
        if message.buttons:
            bodies[-1]["quick_replies"] = quick_replies(message.buttons)
        recipient = {"id": message.external_id}
        # The first part stands for the message (replies and statuses refer to it).
        first = ""
        for body in bodies:
            mid = await self.client.send({"recipient": recipient, **fields, "message": body})
            first = first or mid
        return first

    async def _upload(self, media: MediaRef) -> dict[str, Any]:
        if media.media_id is None:
            raise ExternalError(_("the file is not stored in the hub"), permanent=True)
        if media.size > MAX_UPLOAD_BYTES:
            raise ExternalError(
                _("the file is too large for {channel} (at most 25 MB)").format(
                    channel=_(self.label)
                ),
                permanent=True,
            )
        data = await self.deps.media.read(media.media_id)
        kind = attachment_type(media.mimetype)
        attachment_id = await self.client.upload_attachment(
            kind, data, media.filename, media.mimetype
        )
        return {"type": kind, "payload": {"attachment_id": attachment_id}}

    async def fetch_media(self, media: MediaRef) -> tuple[bytes, str]:
        if not media.remote_id:
            raise ExternalError(_("the attachment has no download address"), permanent=True)
        return await self.client.download(media.remote_id, self.config.max_media_bytes)

    async def send_reaction(self, external_id: str, target_remote_id: str, emoji: str) -> None:
        await self.client.sender_action(reaction_body(external_id, target_remote_id, emoji))

    async def fetch_display_name(self, external_id: str) -> str | None:
        """The customer's name from Meta's profile API, for a later job (never in the
        webhook). None when Meta will not tell (no permission, unknown user)."""
        try:
            return await self.client.profile_name(external_id)
        except ExternalError as exc:
            if exc.permanent:
                return None
            raise


class MessengerChannel(MetaChannel):
    kind = "messenger"
    code = "fb"
    label = "Messenger"
    webhook_path = "/webhooks/messenger"
    text_limit = 2000  # characters


class InstagramChannel(MetaChannel):
    kind = "instagram"
    code = "ig"
    label = "Instagram"
    webhook_path = "/webhooks/instagram"
    text_limit = 1000  # bytes of UTF-8: an emoji-rich text reaches it with fewer characters
    text_measure = staticmethod(utf8_len)
