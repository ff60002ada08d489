"""The WhatsApp Cloud API channel: signed webhooks in, Graph API messages out.

Inbound: verify X-Hub-Signature-256 over the raw body before anything else, parse every
entry/change/message with the pure mapping, store the batch in one transaction (`ingest`)
and answer 200 at once; media is fetched later by the outbox through `fetch_media`.
Outbound: free-form messages only inside the 24-hour customer service window, templates
any time; long texts are split, files are uploaded and sent by media id.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select

from hub.bridges.base import Capabilities
from hub.bridges.http import (
    json_error,
    meta_verification,
    parse_json_object,
    verify_hub_signature,
)
from hub.bridges.whatsapp import mapping, outbound
from hub.bridges.whatsapp.client import WhatsappClient
from hub.bridges.whatsapp.commands import register_commands
from hub.bridges.whatsapp.markup import outbound_text, split_text
from hub.core.ingest import ingest
from hub.core.types import MediaRef, OutboundMessage
from hub.db.models import Message
from hub.errors import ExternalError
from hub.net import read_body

if TYPE_CHECKING:
    from hub.hub import Hub

__all__ = ["WhatsappChannel", "register_commands"]

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
WINDOW_CLOSED = "window_closed"  # ExternalError.code
MAX_CAPTION = 1024


class WhatsappChannel:
    kind = mapping.KIND
    code = "wa"
    label = "WhatsApp"
    capabilities = Capabilities(media=True, buttons=True, reactions=True, templates=True)
    reply_window: timedelta | None = WINDOW

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.config = hub.config.channels.whatsapp
        # Read by the core's ingest: sent once a day to a customer who sends voice notes.
        self.voice_note_reply = self.config.voice_note_reply
        self.client = WhatsappClient(hub.http, self.config)
        self._background: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/webhooks/whatsapp", self._verify)
        app.router.add_post("/webhooks/whatsapp", self._webhook)

    # --- inbound -------------------------------------------------------------------------

    async def _verify(self, request: web.Request) -> web.Response:
        return meta_verification(request, self.config.verify_token)

    async def _webhook(self, request: web.Request) -> web.Response:
        raw = await read_body(request, self.hub.config.http.max_body_bytes)
        signature = request.headers.get("X-Hub-Signature-256")
        if not signature:
            log.warning("whatsapp webhook without X-Hub-Signature-256 refused")
            return json_error(401, "signature required")
        if not verify_hub_signature(raw, signature, self.config.app_secret):
            log.warning("whatsapp webhook with a wrong signature refused")
            return json_error(403, "signature mismatch")
        doc = parse_json_object(raw)
        if doc is None:
            return json_error(400, "body is not a JSON object")
        if doc.get("object") != "whatsapp_business_account":
            log.info("whatsapp webhook for object %r ignored", doc.get("object"))
            return web.json_response({"ok": True})
        batch = mapping.parse_webhook(doc, self.config.phone_number_id)
        for problem in batch.problems:
            log.warning("whatsapp webhook: %s", problem)
        if batch.ignored_fields:
            log.info("whatsapp webhook fields not handled: %s", ", ".join(batch.ignored_fields))
        result = await ingest(self.hub, self, batch.envelopes)
        log.info(
            "whatsapp webhook: %d stored, %d redelivered, %d statuses",
            result.stored,
            result.duplicates,
            result.statuses,
        )
        return web.json_response({"ok": True})

    async def fetch_media(self, media: MediaRef) -> tuple[bytes, str]:
        if not media.remote_id:
            raise ExternalError("the file has no WhatsApp media id", permanent=True)
        return await self.client.fetch_media(media.remote_id, self.config.max_media_bytes)

    # --- outbound ------------------------------------------------------------------------

    def template_names(self) -> str:
        names = [t.name for t in self.config.templates]
        return ", ".join(names) if names else "none configured (channels.whatsapp.templates)"

    def _check_window(self, message: OutboundMessage) -> None:
        last = message.last_inbound_at
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        if last is not None and datetime.now(UTC) - last < WINDOW:
            return
        since = (
            f"the customer last wrote {last:%Y-%m-%d %H:%M} UTC"
            if last
            else "the customer has not written yet"
        )
        raise ExternalError(
            f"The 24-hour window has closed ({since}): WhatsApp only lets the shop send an "
            f"approved template now: use !template NAME [params…]; templates: "
            f"{self.template_names()}",
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
            raise ExternalError("an empty message cannot be sent on WhatsApp", permanent=True)
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
                f"Template {name!r} is not configured; templates: {self.template_names()}",
                permanent=True,
            )
        language = str(data.get("language") or template.language)
        params = [str(p) for p in data.get("params") or []]
        return await self.client.send_message(outbound.template_payload(to, name, language, params))

    async def _send_media(self, to: str, message: OutboundMessage, reply_to: str | None) -> str:
        media = message.media
        assert media is not None
        if not media.media_id:
            raise ExternalError("the file is not stored in the hub", permanent=True)
        if media.size > self.config.max_media_bytes:
            raise ExternalError(
                "the file is larger than channels.whatsapp.max_media_bytes", permanent=True
            )
        data = await self.hub.media.read(media.media_id)
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
            async with self.hub.sessions() as s:
                remote_id = await s.scalar(
                    select(Message.remote_id)
                    .where(
                        Message.id.in_(message_ids),
                        Message.direction == "in",
                        Message.channel == self.kind,
                        Message.kind != "reaction",  # reactions cannot be marked as read
                    )
                    .order_by(Message.id.desc())
                    .limit(1)
                )
            if remote_id:
                await self.client.mark_read(outbound.read_payload(remote_id))
        except ExternalError as exc:
            log.info("whatsapp: marking a message as read failed: %s", exc.human)
        except Exception:
            log.exception("whatsapp: marking a message as read failed")
