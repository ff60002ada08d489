"""Messenger and Instagram as hub channels: one implementation, two configurations.

Webhook: raw body → X-Hub-Signature-256 with the channel's app secret (before any parsing)
→ JSON → `object` must be this channel's → pure mapping → one ingest transaction → 200.
Nothing slow happens here: attachments are fetched later by the outbox via fetch_media, and
customer names are not looked up (the ghost shows "Customer").

Sending: inside 24 h of the customer's last message as RESPONSE; after that, with
`human_agent_tag`, as MESSAGE_TAG HUMAN_AGENT up to 7 days; otherwise a permanent
ExternalError whose text the advisers see in the room.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hub.bridges.base import Capabilities
from hub.bridges.http import (
    json_error,
    meta_verification,
    parse_json_object,
    verify_hub_signature,
)
from hub.bridges.meta.client import MetaClient
from hub.bridges.meta.mapping import (
    WEBHOOK_OBJECTS,
    attachment_type,
    html_to_text,
    messaging_fields,
    parse_webhook,
    quick_replies,
    split_text,
    utf8_len,
    window_closed_text,
)
from hub.config import MetaPageConfig
from hub.core.ingest import ingest
from hub.core.types import MediaRef, OutboundMessage
from hub.db.models import utcnow
from hub.errors import ExternalError
from hub.net import read_body

if TYPE_CHECKING:
    from hub.hub import Hub

log = logging.getLogger(__name__)

# Send API attachments may be up to 25 MB (images 8 MB: Meta refuses those itself).
MAX_UPLOAD_BYTES = 25 * 1024 * 1024


class MetaChannel:
    """The shared implementation; subclasses set the channel's identity and text limit."""

    kind = ""
    code = ""
    label = ""
    capabilities = Capabilities(media=True, buttons=True, reactions=False)
    reply_window: timedelta | None = timedelta(hours=24)
    text_limit = 2000
    text_measure: Callable[[str], int] = staticmethod(len)

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.config: MetaPageConfig = getattr(hub.config.channels, self.kind)
        self.client = MetaClient(hub.http, self.config, self.kind)
        self.webhook_object = WEBHOOK_OBJECTS[self.kind]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"/webhooks/{self.kind}", self._verification)
        app.router.add_post(f"/webhooks/{self.kind}", self._webhook)

    async def _verification(self, request: web.Request) -> web.Response:
        return meta_verification(request, self.config.verify_token)

    async def _webhook(self, request: web.Request) -> web.Response:
        raw = await read_body(request, self.hub.config.http.max_body_bytes)
        header = request.headers.get("X-Hub-Signature-256")
        if not verify_hub_signature(raw, header, self.config.app_secret):
            log.warning(
                "%s webhook refused: %s X-Hub-Signature-256 (from %s)",
                self.kind,
                "wrong" if header else "missing",
                request.remote,
            )
            return json_error(403 if header else 401, "invalid signature")
        doc = parse_json_object(raw)
        if doc is None:
            return json_error(400, "the body is not a JSON object")
        if doc.get("object") != self.webhook_object:
            # A webhook subscription pointing at the wrong endpoint: make it visible.
            log.warning(
                "%s webhook refused: object %r, expected %r (check the app's webhook settings)",
                self.kind,
                doc.get("object"),
                self.webhook_object,
            )
            return json_error(400, f"expected object {self.webhook_object!r}")
        parsed = parse_webhook(doc, self.kind)
        if parsed.skipped:
            log.info(
                "%s webhook: skipped %s",
                self.kind,
                ", ".join(f"{n}× {why}" for why, n in sorted(parsed.skipped.items())),
            )
        if parsed.envelopes:
            await ingest(self.hub, self, parsed.envelopes)
        return web.Response(text="EVENT_RECEIVED")

    async def send(self, message: OutboundMessage) -> str:
        if message.kind == "template":
            raise ExternalError(f"templates cannot be sent on {self.label}", permanent=True)
        now = utcnow()
        fields = messaging_fields(message.last_inbound_at, now, self.config.human_agent_tag)
        if fields is None:
            assert message.last_inbound_at is not None
            human = window_closed_text(
                message.last_inbound_at, now, self.config.human_agent_tag, self.kind
            )
            raise ExternalError(human, permanent=True, code="window_closed")
        text = html_to_text(message.html) if message.html else (message.text or "")
        parts = split_text(text, self.text_limit, self.text_measure) if text.strip() else []
        bodies: list[dict[str, Any]] = []
        if message.media is not None:
            bodies.append({"attachment": await self._upload(message.media)})
        bodies += [{"text": part} for part in parts]
        if not bodies:
            raise ExternalError("the message is empty", permanent=True)
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
            raise ExternalError("the file is not stored in the hub", permanent=True)
        if media.size > MAX_UPLOAD_BYTES:
            raise ExternalError(
                f"the file is too large for {self.label} (at most 25 MB)", permanent=True
            )
        data = await self.hub.media.read(media.media_id)
        kind = attachment_type(media.mimetype)
        attachment_id = await self.client.upload_attachment(
            kind, data, media.filename, media.mimetype
        )
        return {"type": kind, "payload": {"attachment_id": attachment_id}}

    async def fetch_media(self, media: MediaRef) -> tuple[bytes, str]:
        if not media.remote_id:
            raise ExternalError("the attachment has no download address", permanent=True)
        return await self.client.download(media.remote_id, self.config.max_media_bytes)

    async def fetch_display_name(self, external_id: str) -> str | None:
        """The customer's name from Meta's profile API, for a later outbox job (never in the
        webhook). None when Meta will not tell (no permission, unknown user)."""
        try:
            return await self.client.profile_name(external_id)
        except ExternalError as exc:
            if exc.permanent:
                return None
            raise

    async def send_reaction(self, external_id: str, target_remote_id: str, emoji: str) -> None:
        raise ExternalError(f"reactions are not sent to {self.label}", permanent=True)

    async def status_changed(self, external_id: str, message_ids: list[int], status: str) -> None:
        """Not shown (yet). The Send API's `mark_seen` sender action could show "seen"; it
        would belong in an outbox job of its own, like every external call."""


class MessengerChannel(MetaChannel):
    kind = "messenger"
    code = "fb"
    label = "Messenger"
    text_limit = 2000  # characters


class InstagramChannel(MetaChannel):
    kind = "instagram"
    code = "ig"
    label = "Instagram"
    text_limit = 1000  # bytes of UTF-8: an emoji-rich text reaches it with fewer characters
    text_measure = staticmethod(utf8_len)
