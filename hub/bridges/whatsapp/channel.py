"""The WhatsApp Cloud API channel: signed webhooks in, Graph API messages out.

Inbound: the webhook pipeline (hub.bridges.webhooks) checks X-Hub-Signature-256 over the raw
body first, `parse` maps every entry/change/message with the pure mapping; media is fetched
later by a job through `fetch_media`. Outbound: free-form messages only inside the 24-hour
customer service window, templates any time; long texts are split, files are uploaded and
sent by media id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, timedelta
from typing import Any

from aiohttp import web
from babel.dates import format_timedelta

from hub.bridges.base import Capabilities, Channel, ChannelDeps, Refusal
from hub.bridges.http import meta_verification, verify_hub_signature
from hub.bridges.whatsapp import mapping, outbound
from hub.bridges.whatsapp.client import WhatsappClient
from hub.bridges.whatsapp.commands import WhatsappCommands
from hub.bridges.whatsapp.markup import outbound_text, split_text
from hub.config import WhatsappConfig
from hub.core.commands import CommandSpec
from hub.core.types import MediaRef, OutboundMessage, Parsed
from hub.db.models import utcnow
from hub.db.receipts import newest_readable
from hub.errors import WINDOW_CLOSED, ExternalError
from hub.i18n import _, current_locale

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
MAX_CAPTION = 1024


class WhatsappChannel(Channel):
    kind = mapping.KIND
    code = "wa"
    label = "WhatsApp"
    # Reactions and replies (context) exist for business messages; edits and deletions do
    # not: the dispatcher tells the room once per conversation instead.
    capabilities = Capabilities(buttons=True, reactions=True)
    reply_window = WINDOW
    webhook_path = "/webhooks/whatsapp"

    def __init__(self, deps: ChannelDeps, config: WhatsappConfig, command_prefix: str) -> None:
        super().__init__(deps)
        self.config = config
        # None: the catalogue's text in the shop's language; "": no reply to voice notes.
        if config.voice_note_reply is None:
            self.voice_note_reply = _(
                "Thank you for your voice message! We cannot listen to voice messages here: "
                "please write us your question, and an adviser will answer you."
            )
        else:
            self.voice_note_reply = config.voice_note_reply or None
        self.client = WhatsappClient(deps.http, config)
        self._commands = WhatsappCommands(config.templates, command_prefix)
        self._background: set[asyncio.Task[None]] = set()

    def commands(self) -> list[CommandSpec[Any]]:
        return self._commands.specs()

    # --- inbound -------------------------------------------------------------------------

    def subscription_challenge(self, query: Mapping[str, str]) -> web.Response:
        return meta_verification(query, self.config.verify_token, self.kind)

    def verify(self, raw: bytes, headers: Mapping[str, str]) -> Refusal | None:
        signature = headers.get("X-Hub-Signature-256")
        if not signature:
            return Refusal(401, "signature required", "whatsapp webhook without signature")
        if not verify_hub_signature(raw, signature, self.config.app_secret):
            return Refusal(403, "signature mismatch", "whatsapp webhook with a wrong signature")
        return None

    def parse(self, doc: dict[str, Any]) -> Parsed | Refusal:
        if doc.get("object") != "whatsapp_business_account":
            parsed = Parsed()
            parsed.skip(f"object {doc.get('object')!r}")
            return parsed
        return mapping.parse_webhook(doc, self.config.phone_number_id)

    async def fetch_media(self, media: MediaRef) -> tuple[bytes, str]:
        if not media.remote_id:
            raise ExternalError(_("the file has no WhatsApp media id"), permanent=True)
        return await self.client.fetch_media(media.remote_id, self.config.max_media_bytes)

    # --- outbound ------------------------------------------------------------------------

    def template_names(self) -> str:
        names = [t.name for t in self.config.templates]
        return ", ".join(names) if names else _("none configured (channels.whatsapp.templates)")

    def _check_window(self, message: OutboundMessage) -> None:
        last = message.last_inbound_at
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        if last is not None and utcnow() - last < WINDOW:
            return
        if last is not None:
            ago = format_timedelta(
                last - utcnow(), threshold=2, add_direction=True, locale=current_locale()
            )
            since = _("the customer last wrote {ago}").format(ago=ago)
        else:
            since = _("the customer has not written yet")
        raise ExternalError(
            _(
                "The 24-hour window has closed ({since}): WhatsApp only lets the shop send an "
                "approved template now: use !template NAME [params…]; templates: {templates}"
            ).format(since=since, templates=self.template_names()),
            permanent=True,
            code=WINDOW_CLOSED,
        )

    async def send(self, message: OutboundMessage) -> str:
        to = message.external_id
        reply_to = message.reply_to_remote_id
        if message.kind == "template":
            return await self._send_template(to, message.data or {})
        self._check_window(message)
        if message.kind == "product":
            data = message.data or {}
            payload = outbound.product_payload(
                to, str(data["catalog_id"]), str(data["sku"]), message.text
            )
            return await self.client.send_message(payload)
        if message.media is not None:
            return await self._send_media(to, message, reply_to)
        text = outbound_text(message.text, message.html)
        if message.buttons:
            payload = (
                outbound.list_payload(to, text, message.list_button, message.buttons, reply_to)
                if message.list_button
                else outbound.buttons_payload(to, text, message.buttons, reply_to)
            )
            return await self.client.send_message(payload)
        return await self._send_text(to, text, reply_to)

    async def _send_text(self, to: str, text: str, reply_to: str | None) -> str:
        if not text.strip():
            raise ExternalError(_("an empty message cannot be sent on WhatsApp"), permanent=True)
        first: str | None = None
        for n, part in enumerate(split_text(text)):
            wamid = await self.client.send_message(
                outbound.text_payload(to, part, reply_to if n == 0 else None)
            )
            first = first or wamid
        assert first is not None
        return first

    async def _send_template(self, to: str, data: dict[str, Any]) -> str:
        name = str(data.get("name") or "")
        configured = {t.name: t for t in self.config.templates}
        template = configured.get(name)
        if template is None:
            raise ExternalError(
                _("Template '{name}' is not configured; templates: {templates}").format(
                    name=name, templates=self.template_names()
                ),
                permanent=True,
            )
        language = str(data.get("language") or template.language)
        params = [str(p) for p in data.get("params") or []]
        return await self.client.send_message(outbound.template_payload(to, name, language, params))

    async def _send_media(self, to: str, message: OutboundMessage, reply_to: str | None) -> str:
        media = message.media
        assert media is not None
        if not media.media_id:
            raise ExternalError(_("the file is not stored in the hub"), permanent=True)
        if media.size > self.config.max_media_bytes:
            raise ExternalError(
                _("the file is larger than channels.whatsapp.max_media_bytes"), permanent=True
            )
        data = await self.deps.media.read(media.media_id)
        wa_type = outbound.wa_media_type(message.kind, media.mimetype)
        media_id = await self.client.upload_media(data, media.filename, media.mimetype)
        caption = outbound_text(message.text, message.html) if message.text else None
        fits = caption is not None and wa_type in ("image", "video", "document")
        fits = fits and len(caption or "") <= MAX_CAPTION
        wamid = await self.client.send_message(
            outbound.media_payload(
                to,
                wa_type,
                media_id,
                caption=caption if fits else None,
                filename=media.filename,
                reply_to=reply_to,
            )
        )
        if caption and not fits:
            # Audio and stickers take no caption, and long captions are refused: send as text.
            await self._send_text(to, caption, None)
        return wamid

    async def send_reaction(self, external_id: str, target_remote_id: str, emoji: str) -> None:
        await self.client.send_message(
            outbound.reaction_payload(external_id, target_remote_id, emoji)
        )

    async def status_changed(self, external_id: str, message_ids: list[int], status: str) -> None:
        """An adviser read the customer's messages: mark the newest as read on WhatsApp, so
        the customer sees blue ticks. Best effort, off the caller's transaction."""
        if status != "read" or not message_ids:
            return
        task = asyncio.create_task(self._mark_read(message_ids))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _mark_read(self, message_ids: list[int]) -> None:
        try:
            remote_id = await self.deps.db.read(newest_readable, self.kind, message_ids)
            if remote_id:
                await self.client.mark_read(outbound.read_payload(remote_id))
        except ExternalError as exc:
            log.info("whatsapp: marking a message as read failed: %s", exc.human)
        except Exception:
            log.exception("whatsapp: marking a message as read failed")
