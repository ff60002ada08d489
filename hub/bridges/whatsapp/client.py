"""The WhatsApp Cloud API (Graph API) as the hub uses it: send messages, upload media, and
download customers' media. Every failure becomes a ExternalError through the one error table
(`errors.py`). The access token travels in the Authorization header only and is never
logged; neither are message bodies.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from hub.bridges.whatsapp.errors import classify
from hub.bridges.whatsapp.mapping import base_mimetype
from hub.bridges.whatsapp.outbound import sent_message_id
from hub.config import WhatsappConfig
from hub.errors import ExternalError

log = logging.getLogger(__name__)

CONNECT_RETRIES = 2  # only for failures before anything was sent; the outbox retries the rest
_CHUNK = 64 * 1024


class WhatsappClient:
    def __init__(self, http: aiohttp.ClientSession, config: WhatsappConfig) -> None:
        self.http = http
        self.config = config
        self.base = str(config.api_base_url).rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=config.request_timeout_seconds)

    def _url(self, *parts: str) -> str:
        return "/".join([self.base, self.config.api_version, *parts])

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.access_token}"}

    async def send_message(self, payload: dict[str, Any]) -> str:
        """POST /{phone-number-id}/messages; the new message's wamid."""
        doc = await self._json("POST", self._url(self.config.phone_number_id, "messages"), payload)
        wamid = sent_message_id(doc)
        if not wamid:
            raise ExternalError(
                "WhatsApp accepted the message but returned no message id", permanent=False
            )
        return wamid

    async def mark_read(self, payload: dict[str, Any]) -> None:
        await self._json("POST", self._url(self.config.phone_number_id, "messages"), payload)

    async def upload_media(self, data: bytes, filename: str, mimetype: str) -> str:
        """POST /{phone-number-id}/media (multipart); the media id to send by."""
        mimetype = base_mimetype(mimetype)

        def form() -> aiohttp.FormData:  # a FormData can be sent only once
            fd = aiohttp.FormData()
            fd.add_field("messaging_product", "whatsapp")
            fd.add_field("type", mimetype)
            fd.add_field("file", data, filename=filename, content_type=mimetype)
            return fd

        doc = await self._json("POST", self._url(self.config.phone_number_id, "media"), form=form)
        media_id = doc.get("id") if isinstance(doc, dict) else None
        if not media_id:
            raise ExternalError("WhatsApp returned no id for the uploaded file", permanent=False)
        return str(media_id)

    async def media_info(self, media_id: str) -> dict[str, Any]:
        """GET /{media-id}: the short-lived download URL, MIME type and size."""
        doc = await self._json("GET", self._url(media_id))
        if not isinstance(doc, dict) or not doc.get("url"):
            raise ExternalError("WhatsApp returned no download address for a file", permanent=True)
        return doc

    async def fetch_media(self, media_id: str, max_bytes: int) -> tuple[bytes, str]:
        """A customer's file: its URL from the media id, then the bytes (token required)."""
        info = await self.media_info(media_id)
        size = _int(info.get("file_size"))
        if size is not None and size > max_bytes:
            raise _too_big(max_bytes)
        data, content_type = await self._download(str(info["url"]), max_bytes)
        return data, base_mimetype(str(info.get("mime_type") or content_type))

    async def _download(self, url: str, max_bytes: int) -> tuple[bytes, str]:
        async def attempt() -> tuple[bytes, str]:
            async with self.http.get(url, headers=self._auth, timeout=self.timeout) as resp:
                if resp.status >= 400:
                    # 404: the URL expired (5 minutes); the outbox retry asks for a new one.
                    raise await self._error(resp)
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise _too_big(max_bytes)
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise _too_big(max_bytes)
                    chunks.append(chunk)
                return b"".join(chunks), resp.headers.get("Content-Type", "")

        return await self._with_retries(attempt, idempotent=True)

    async def _json(
        self,
        method: str,
        url: str,
        payload: dict[str, Any] | None = None,
        form: Any = None,
    ) -> Any:
        async def attempt() -> Any:
            kwargs: dict[str, Any] = {"headers": self._auth, "timeout": self.timeout}
            if payload is not None:
                kwargs["json"] = payload
            if form is not None:
                kwargs["data"] = form()
            async with self.http.request(method, url, **kwargs) as resp:
                if resp.status >= 400:
                    raise await self._error(resp)
                try:
                    return await resp.json(content_type=None)
                except ValueError:
                    raise ExternalError(
                        "WhatsApp answered with something that is not JSON", permanent=False
                    ) from None

        return await self._with_retries(attempt, idempotent=method == "GET")

    async def _with_retries(self, attempt: Any, *, idempotent: bool) -> Any:
        """Retry a request whose connection failed. A POST is retried only when it never
        reached WhatsApp (connect errors), so a message is not sent twice by us."""
        for n in range(CONNECT_RETRIES + 1):
            try:
                return await attempt()
            except ExternalError:
                raise
            except aiohttp.ClientConnectorError as exc:
                reason = f"cannot connect to WhatsApp ({type(exc).__name__})"
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
                if not idempotent:
                    raise ExternalError(
                        "the connection to WhatsApp broke off; retrying", permanent=False
                    ) from exc
                reason = f"connection to WhatsApp broke off ({type(exc).__name__})"
            except TimeoutError as exc:
                raise ExternalError(
                    "WhatsApp did not answer in time; retrying", permanent=False
                ) from exc
            except aiohttp.ClientError as exc:
                raise ExternalError(
                    f"talking to WhatsApp failed ({type(exc).__name__}); retrying",
                    permanent=False,
                ) from exc
            if n < CONNECT_RETRIES:
                log.info("whatsapp: %s, attempt %d of %d", reason, n + 1, CONNECT_RETRIES + 1)
                await asyncio.sleep(0.2 * (n + 1))
        raise ExternalError(f"{reason}; retrying later", permanent=False)

    @staticmethod
    async def _error(resp: aiohttp.ClientResponse) -> ExternalError:
        try:
            body: Any = await resp.json(content_type=None)
        except (ValueError, aiohttp.ClientError):
            body = None
        result = classify(resp.status, body, resp.headers.get("Retry-After"))
        log.warning(
            "whatsapp: API error HTTP %s code %s (%s)",
            resp.status,
            result.code,
            "retry" if not result.permanent else "permanent",
        )
        return ExternalError(
            result.human,
            permanent=result.permanent,
            retry_after=result.retry_after,
            code=result.code,
        )


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _too_big(max_bytes: int) -> ExternalError:
    return ExternalError(
        f"the customer's file is larger than the hub accepts ({max_bytes // (1024 * 1024)} MB, "
        "channels.whatsapp.max_media_bytes)",
        permanent=True,
    )
