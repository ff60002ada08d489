"""The Graph API calls of the Messenger Platform (Messenger and Instagram messaging), over
the shared hub.bridges.graph client: the page access token in the Authorization header only,
errors classified by the Meta error table. Media URLs are signed: they are never logged.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from hub.bridges.graph import GraphClient
from hub.bridges.meta.errors import classify
from hub.config import MetaPageConfig
from hub.errors import ExternalError
from hub.i18n import _

LABELS = {"messenger": "Messenger", "instagram": "Instagram"}


def messages_path(channel: str, page_id: str) -> str:
    """The Send API endpoint: Messenger as the page (`me`); Instagram messaging through the
    Facebook Page linked to the Instagram professional account."""
    return "/me/messages" if channel == "messenger" else f"/{page_id}/messages"


def attachments_path(page_id: str) -> str:
    return f"/{page_id}/message_attachments"


class MetaClient:
    def __init__(self, http: aiohttp.ClientSession, config: MetaPageConfig, channel: str) -> None:
        self.config = config
        self.channel = channel
        self.graph = GraphClient(
            http,
            service="Meta",
            base_url=str(config.api_base_url),
            api_version=config.api_version,
            token=config.page_access_token,
            timeout=config.request_timeout_seconds,
            classify=classify,
        )

    async def send(self, body: dict[str, Any]) -> str:
        """POST a Send API request; the message id Meta assigned."""
        path = messages_path(self.channel, self.config.page_id)
        doc = await self.graph.call("POST", path, json_body=body)
        mid = doc.get("message_id")
        if not isinstance(mid, str) or not mid:
            raise ExternalError(_("Meta's answer carried no message id"), permanent=True)
        return mid

    async def sender_action(self, body: dict[str, Any]) -> None:
        """POST a sender action (react, unreact): Meta answers with the recipient only."""
        await self.graph.call(
            "POST", messages_path(self.channel, self.config.page_id), json_body=body
        )

    async def upload_attachment(
        self, attachment_type: str, data: bytes, filename: str, mimetype: str
    ) -> str:
        """Attachment Upload API from bytes (multipart `filedata`); the attachment id."""
        message = {"attachment": {"type": attachment_type, "payload": {"is_reusable": True}}}

        def form() -> aiohttp.FormData:
            fd = aiohttp.FormData()
            if self.channel == "instagram":
                fd.add_field("platform", "instagram")
            fd.add_field("message", json.dumps(message))
            fd.add_field("filedata", data, filename=filename, content_type=mimetype)
            return fd

        doc = await self.graph.call("POST", attachments_path(self.config.page_id), form=form)
        attachment_id = doc.get("attachment_id")
        if not isinstance(attachment_id, str | int) or not str(attachment_id):
            raise ExternalError(_("Meta's upload answer carried no attachment id"), permanent=True)
        return str(attachment_id)

    async def profile_name(self, user_id: str) -> str | None:
        """The customer's name from the User Profile API (PSID) or Instagram (IGSID); asked
        by a job after the first message, never by the webhook (it must answer fast)."""
        fields = "first_name,last_name" if self.channel == "messenger" else "name,username"
        doc = await self.graph.call("GET", f"/{user_id}", params={"fields": fields})
        if self.channel == "messenger":
            name = " ".join(str(doc[k]) for k in ("first_name", "last_name") if doc.get(k))
        else:
            name = str(doc.get("name") or doc.get("username") or "")
        return name or None

    async def download(self, url: str, max_bytes: int) -> tuple[bytes, str]:
        """An inbound attachment from its (signed, public) CDN URL, at most `max_bytes`.
        No token is sent: the CDN needs none, and it must not leave Meta's Graph API."""

        def too_big() -> ExternalError:
            return ExternalError(
                _("the file is larger than max_media_bytes ({bytes} bytes)").format(
                    bytes=max_bytes
                ),
                permanent=True,
            )

        data, ctype = await self.graph.download(
            url, max_bytes, too_big, with_token=False, gone=_gone
        )
        return data, ctype.split(";")[0].strip() or "application/octet-stream"


def _gone(status: int) -> ExternalError | None:
    if status in (403, 404, 410):
        return ExternalError(
            _("the file is no longer available at Meta (its link expired)"),
            permanent=True,
            code=str(status),
        )
    return None
