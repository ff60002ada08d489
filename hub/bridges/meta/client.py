"""The Graph API calls of the Messenger Platform (Messenger and Instagram messaging).

The page access token travels in the Authorization header, never in a URL, and no URL is
ever logged (media URLs are signed). Every request has the configured timeout; only a
failed connection is retried here (twice), because the request cannot have reached Meta.
Everything else becomes a ExternalError through the error table, and the outbox retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from hub.bridges.meta.errors import classify
from hub.config import MetaPageConfig
from hub.errors import ExternalError

log = logging.getLogger(__name__)

CONNECT_RETRIES = 2
MAX_ANSWER_BYTES = 1_048_576  # Graph API answers are small JSON documents


def messages_path(channel: str, page_id: str) -> str:
    """The Send API endpoint: Messenger as the page (`me`); Instagram messaging through the
    Facebook Page linked to the Instagram professional account."""
    return "/me/messages" if channel == "messenger" else f"/{page_id}/messages"


def attachments_path(page_id: str) -> str:
    return f"/{page_id}/message_attachments"


class GraphClient:
    def __init__(self, http: aiohttp.ClientSession, config: MetaPageConfig, channel: str) -> None:
        self.http = http
        self.config = config
        self.channel = channel
        self.base = f"{str(config.api_base_url).rstrip('/')}/{config.api_version}"
        self.timeout = aiohttp.ClientTimeout(total=config.request_timeout_seconds)

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.page_access_token}"}

    async def send(self, body: dict[str, Any]) -> str:
        """POST a Send API request; the message id Meta assigned."""
        path = messages_path(self.channel, self.config.page_id)
        doc = await self._call("send", path, json_body=body)
        mid = doc.get("message_id")
        if not isinstance(mid, str) or not mid:
            raise ExternalError("Meta's answer carried no message id", permanent=True)
        return mid

    async def upload_attachment(
        self, attachment_type: str, data: bytes, filename: str, mimetype: str
    ) -> str:
        """Attachment Upload API from bytes (multipart `filedata`); the attachment id."""
        message = {"attachment": {"type": attachment_type, "payload": {"is_reusable": True}}}

        def form() -> aiohttp.FormData:  # a FormData is consumed by one request
            fd = aiohttp.FormData()
            if self.channel == "instagram":
                fd.add_field("platform", "instagram")
            fd.add_field("message", json.dumps(message))
            fd.add_field("filedata", data, filename=filename, content_type=mimetype)
            return fd

        doc = await self._call("upload", attachments_path(self.config.page_id), form=form)
        attachment_id = doc.get("attachment_id")
        if not isinstance(attachment_id, str | int) or not str(attachment_id):
            raise ExternalError("Meta's upload answer carried no attachment id", permanent=True)
        return str(attachment_id)

    async def profile_name(self, user_id: str) -> str | None:
        """The customer's name from the User Profile API (PSID) or Instagram (IGSID).
        Not used by the webhook (it must answer fast); meant for a later outbox job."""
        fields = "first_name,last_name" if self.channel == "messenger" else "name,username"
        doc = await self._call("profile", f"/{user_id}", params={"fields": fields})
        if self.channel == "messenger":
            name = " ".join(str(doc[k]) for k in ("first_name", "last_name") if doc.get(k))
        else:
            name = str(doc.get("name") or doc.get("username") or "")
        return name or None

    async def _call(
        self,
        what: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        method = "GET" if params is not None else "POST"
        url = self.base + path
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                async with self.http.request(
                    method,
                    url,
                    headers=self._auth,
                    json=json_body,
                    data=form() if form else None,
                    params=params,
                    timeout=self.timeout,
                ) as resp:
                    raw = await resp.content.read(MAX_ANSWER_BYTES)
                    doc = _json(raw)
                    if resp.status >= 400 or "error" in doc:
                        err = classify(resp.status, doc, resp.headers.get("Retry-After"))
                        log.warning(
                            "%s %s: Meta answered %s (code %s)",
                            self.channel,
                            what,
                            resp.status,
                            err.code,
                        )
                        raise err
                    return doc
            except aiohttp.ClientConnectorError:
                if attempt < CONNECT_RETRIES:
                    await asyncio.sleep(0.25 * (attempt + 1))
                    continue
                log.warning("%s %s: cannot connect to the Graph API", self.channel, what)
                raise ExternalError(
                    "cannot reach Meta (connection failed); it will be tried again",
                    permanent=False,
                ) from None
            except TimeoutError:
                log.warning("%s %s: the Graph API did not answer in time", self.channel, what)
                raise ExternalError(
                    f"Meta did not answer within {self.config.request_timeout_seconds:g} s; "
                    "it will be tried again",
                    permanent=False,
                ) from None
            except aiohttp.ClientError as exc:
                log.warning("%s %s: %s", self.channel, what, type(exc).__name__)
                raise ExternalError(
                    "the connection to Meta failed; it will be tried again", permanent=False
                ) from None
        raise AssertionError("unreachable")

    async def download(self, url: str, max_bytes: int) -> tuple[bytes, str]:
        """An inbound attachment from its (signed, public) CDN URL, at most `max_bytes`.
        No token is sent: the CDN needs none, and it must not leave Meta's Graph API."""
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                async with self.http.get(url, timeout=self.timeout) as resp:
                    if resp.status in (403, 404, 410):
                        raise ExternalError(
                            "the file is no longer available at Meta (its link expired)",
                            permanent=True,
                            code=str(resp.status),
                        )
                    if resp.status >= 400:
                        raise ExternalError(
                            f"Meta's file server answered HTTP {resp.status}",
                            permanent=resp.status < 500 and resp.status != 429,
                            code=str(resp.status),
                        )
                    too_big = ExternalError(
                        f"the file is larger than max_media_bytes ({max_bytes} bytes)",
                        permanent=True,
                    )
                    if resp.content_length is not None and resp.content_length > max_bytes:
                        raise too_big
                    data = await resp.content.read(max_bytes + 1)
                    if len(data) > max_bytes:
                        raise too_big
                    mimetype = resp.content_type or "application/octet-stream"
                    return data, mimetype
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                # A GET can be repeated safely.
                if attempt < CONNECT_RETRIES:
                    await asyncio.sleep(0.25 * (attempt + 1))
                    continue
                log.warning("%s media download failed: %s", self.channel, type(exc).__name__)
                raise ExternalError(
                    "the file could not be downloaded from Meta; it will be tried again",
                    permanent=False,
                ) from None
        raise AssertionError("unreachable")


def _json(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
