"""The WhatsApp Cloud API (Graph API) as the hub uses it: send messages, upload media, and
download customers' media. Every failure becomes an ExternalError through the one error table
(`errors.py`). The access token travels in the Authorization header only and is never
logged; neither are message bodies.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from hub.bridges.graph import GraphClient
from hub.bridges.whatsapp.errors import classify
from hub.bridges.whatsapp.mapping import base_mimetype
from hub.bridges.whatsapp.outbound import sent_message_id
from hub.config import WhatsappConfig
from hub.errors import ExternalError
from hub.i18n import _


class WhatsappClient:
    def __init__(self, http: aiohttp.ClientSession, config: WhatsappConfig) -> None:
        self.config = config
        self.graph = GraphClient(
            http,
            service="WhatsApp",
            base_url=str(config.api_base_url),
            api_version=config.api_version,
            token=config.access_token,
            timeout=config.request_timeout_seconds,
            classify=classify,
        )
        self._messages = f"/{config.phone_number_id}/messages"

    async def send_message(self, payload: dict[str, Any]) -> str:
        """POST /{phone-number-id}/messages; the new message's wamid."""
        doc = await self.graph.call("POST", self._messages, json_body=payload)
        wamid = sent_message_id(doc)
        if not wamid:
            raise ExternalError(
                _("WhatsApp accepted the message but returned no message id"), permanent=False
            )
        return wamid

    async def mark_read(self, payload: dict[str, Any]) -> None:
        await self.graph.call("POST", self._messages, json_body=payload)

    async def upload_media(self, data: bytes, filename: str, mimetype: str) -> str:
        """POST /{phone-number-id}/media (multipart); the media id to send by."""
        mimetype = base_mimetype(mimetype)

        def form() -> aiohttp.FormData:
            fd = aiohttp.FormData()
            fd.add_field("messaging_product", "whatsapp")
            fd.add_field("type", mimetype)
            fd.add_field("file", data, filename=filename, content_type=mimetype)
            return fd

        doc = await self.graph.call("POST", f"/{self.config.phone_number_id}/media", form=form)
        media_id = doc.get("id")
        if not media_id:
            raise ExternalError(_("WhatsApp returned no id for the uploaded file"), permanent=False)
        return str(media_id)

    async def media_info(self, media_id: str) -> dict[str, Any]:
        """GET /{media-id}: the short-lived download URL, MIME type and size."""
        doc = await self.graph.call("GET", f"/{media_id}")
        if not doc.get("url"):
            raise ExternalError(
                _("WhatsApp returned no download address for a file"), permanent=True
            )
        return doc

    async def fetch_media(self, media_id: str, max_bytes: int) -> tuple[bytes, str]:
        """A customer's file: its URL from the media id, then the bytes (token required).
        An expired URL (404 after 5 minutes) is a temporary error: the retry asks anew."""
        info = await self.media_info(media_id)
        size = _int(info.get("file_size"))
        if size is not None and size > max_bytes:
            raise _too_big(max_bytes)
        data, content_type = await self.graph.download(
            str(info["url"]),
            max_bytes,
            lambda: _too_big(max_bytes),
            with_token=True,
            gone=_expired,
        )
        return data, base_mimetype(str(info.get("mime_type") or content_type))


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _expired(status: int) -> ExternalError | None:
    if status != 404:
        return None
    return ExternalError(
        _("the file's download address at WhatsApp expired; asking for a new one"),
        permanent=False,
    )


def _too_big(max_bytes: int) -> ExternalError:
    return ExternalError(
        _(
            "the customer's file is larger than the hub accepts ({mb} MB, "
            "channels.whatsapp.max_media_bytes)"
        ).format(mb=max_bytes // (1024 * 1024)),
        permanent=True,
    )
