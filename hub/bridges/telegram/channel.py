"""The Telegram channel: a bot's private chats with customers, through the Bot API.

Webhook: POST /webhooks/telegram, authenticated by the X-Telegram-Bot-Api-Secret-Token header
that setWebhook asked Telegram to send (never a token in the URL). One Update per request;
it is parsed by the pure mapping and stored by `ingest` in one transaction, then answered 200.
Telegram redelivers until it gets a 2xx, so an error storing it answers 500 on purpose.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from hub.bridges.base import Capabilities
from hub.bridges.http import parse_json_object
from hub.bridges.telegram import mapping
from hub.bridges.telegram.client import TelegramClient
from hub.bridges.telegram.markup import (
    escape_text,
    plain_text,
    split_html,
    to_telegram_html,
    visible_length,
)
from hub.core.ingest import ingest, mark_blocked
from hub.core.types import MediaRef, OutboundMessage
from hub.errors import ExternalError
from hub.net import read_body

if TYPE_CHECKING:
    from hub.config import Config
    from hub.hub import Hub

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
CALLBACK_ANSWER_TIMEOUT = 10.0  # the button's spinner is cosmetic: never wait long
_PROGRESS_MAX = 1000


WEBHOOK_PORTS = (443, 80, 88, 8443)  # the only ports Telegram's servers call


def webhook_url(config: Config) -> str:
    return config.http.public_base + WEBHOOK_PATH


def checked_webhook_url(config: Config) -> str:
    """The URL to register, refused early (with what to change) when Telegram's own servers
    could never call it: they need https on one of four ports. A local Bot API server or a
    test stand-in (another api_base_url) takes any URL."""
    url = webhook_url(config)
    if urlsplit(str(config.channels.telegram.api_base_url)).hostname != "api.telegram.org":
        return url
    parts = urlsplit(url)
    if parts.scheme != "https" or (parts.port or 443) not in WEBHOOK_PORTS:
        raise ExternalError(
            f"Telegram only calls https webhooks on port 443, 80, 88 or 8443, not {url}: set "
            "http.public_url to the hub's public https address",
            permanent=True,
            code="bad_webhook_url",
        )
    return url


def webhook_parameters(config: Config, url: str) -> dict[str, Any]:
    return {
        "url": url,
        "secret_token": config.channels.telegram.webhook_secret,
        "allowed_updates": mapping.ALLOWED_UPDATES,
    }


@dataclass(frozen=True)
class _Step:
    """One Bot API call of an outbound message (long texts take several)."""

    method: str
    params: dict[str, Any]
    upload: tuple[str, str, str] | None = None  # (field, filename, mimetype)
    plain_fallback: str | None = None  # the text without formatting, if Telegram refuses it


class TelegramChannel:
    kind = mapping.KIND
    code = "tg"
    label = "Telegram"
    capabilities = Capabilities(media=True, buttons=True, edits=True, reactions=True)
    reply_window: timedelta | None = None

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.config = hub.config.channels.telegram
        self.client = TelegramClient(
            hub.http,
            str(self.config.api_base_url),
            self.config.bot_token,
            timeout=self.config.request_timeout_seconds,
            max_download_bytes=self.config.max_media_bytes,
        )
        # Read by ingest: what the bot answers to /start (see the report's proposed hook).
        self.start_greeting: str | None = self.config.start_greeting or None
        self._tasks: set[asyncio.Task[None]] = set()
        # Parts of split messages already sent, so a retry does not send them twice.
        self._progress: dict[int, list[str]] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(WEBHOOK_PATH, self._webhook)

    async def on_start(self) -> None:
        """Register the webhook when the config asks for it; a failure is logged, not fatal
        (the hub still serves everything else, and Telegram keeps a webhook set earlier)."""
        if not self.config.set_webhook_on_start:
            return
        try:
            url = await self.set_webhook()
        except ExternalError as exc:
            log.error("telegram: setWebhook at start failed: %s", exc.human)
            return
        log.info("telegram: webhook registered at %s", url)

    async def set_webhook(self) -> str:
        url = checked_webhook_url(self.hub.config)
        await self.client.call("setWebhook", webhook_parameters(self.hub.config, url))
        return url

    # -- inbound -------------------------------------------------------------------------

    def _verify(self, request: web.Request) -> web.Response | None:
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            log.warning("telegram webhook without %s refused (%s)", SECRET_HEADER, request.remote)
            return web.Response(status=401, text="missing secret token")
        if not hmac.compare_digest(given.encode(), self.config.webhook_secret.encode()):
            log.warning("telegram webhook with a wrong secret token refused (%s)", request.remote)
            return web.Response(status=403, text="wrong secret token")
        return None

    async def _webhook(self, request: web.Request) -> web.Response:
        raw = await read_body(request, self.hub.config.http.max_body_bytes)
        refused = self._verify(request)
        if refused is not None:
            return refused
        doc = parse_json_object(raw)
        if doc is None:
            return web.Response(status=400, text="body must be a JSON object")
        parsed = mapping.parse_update(doc)
        if parsed.ignored:
            log.info("telegram update %s not stored: %s", parsed.update_id, parsed.ignored)
        if parsed.envelopes:
            await ingest(self.hub, self, parsed.envelopes)
        if parsed.blocked is not None and parsed.chat_id:
            await mark_blocked(self.hub, self, parsed.chat_id, parsed.blocked)
        if parsed.callback_query_id:
            # After the update is stored: the answer only stops the button's spinner.
            self._background(self._answer_callback(parsed.callback_query_id))
        # An empty 200: a JSON body with "method" would be run by Telegram as an API call.
        return web.Response(status=200)

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_callback(self, callback_query_id: str) -> None:
        try:
            await asyncio.wait_for(
                self.client.call("answerCallbackQuery", {"callback_query_id": callback_query_id}),
                CALLBACK_ANSWER_TIMEOUT,
            )
        except (ExternalError, TimeoutError) as exc:
            log.info("telegram: answerCallbackQuery failed (%s)", getattr(exc, "code", "timeout"))

    async def fetch_media(self, media: MediaRef) -> tuple[bytes, str]:
        if not media.remote_id:
            raise ExternalError("The file has no Telegram id.", permanent=True, code="bad_file")
        info = await self.client.call("getFile", {"file_id": media.remote_id})
        size = info.get("file_size") if isinstance(info, dict) else None
        if isinstance(size, int) and size > self.client.max_download_bytes:
            raise ExternalError(
                "The customer's file is larger than the hub accepts "
                "(channels.telegram.max_media_bytes).",
                permanent=True,
                code="file_too_big",
            )
        path = info.get("file_path") if isinstance(info, dict) else None
        if not isinstance(path, str) or not path:
            raise ExternalError(
                "Telegram gave no download path for the file.", permanent=True, code="bad_file"
            )
        data, ctype = await self.client.download(path)
        generic = ("", "application/octet-stream")
        return data, media.mimetype if media.mimetype not in generic else ctype

    # -- outbound ------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> str:
        try:
            steps = self._steps(message)
        except ValueError as exc:
            raise ExternalError(str(exc), permanent=True, code="bad_request") from None
        data = await self._file_bytes(message.media) if message.media else b""
        done = self._progress.setdefault(message.message_id, [])
        try:
            for n, step in enumerate(steps):
                if n < len(done):
                    continue  # sent by an earlier attempt of this job
                done.append(mapping.sent_remote_id(await self._run(step, data)))
        except ExternalError as exc:
            if exc.permanent:
                self._progress.pop(message.message_id, None)
            raise
        self._progress.pop(message.message_id, None)
        if len(self._progress) > _PROGRESS_MAX:
            self._progress.clear()
        return done[0]

    async def _file_bytes(self, media: MediaRef) -> bytes:
        if not media.media_id:
            raise ExternalError("The file is not in the hub's store.", permanent=True)
        try:
            return await self.hub.media.read(media.media_id)
        except FileNotFoundError:
            raise ExternalError("The file is no longer stored.", permanent=True) from None

    def _steps(self, message: OutboundMessage) -> list[_Step]:
        """The Bot API calls for one message: the file (with its caption if it fits), then
        the text in parts of at most 4096 characters; reply on the first, buttons on the last."""
        chat = mapping.chat_id(message.external_id)
        if message.html:
            html = to_telegram_html(message.html)
        else:
            html = escape_text((message.text or "").strip())
        steps: list[_Step] = []
        if message.media:
            m = message.media
            method, field = mapping.media_method(message.kind, m.mimetype, m.size)
            caption = html if 0 < visible_length(html) <= mapping.CAPTION_LIMIT else ""
            params = {"chat_id": chat, "caption": caption or None}
            if caption:
                params["parse_mode"] = "HTML"
            steps.append(_Step(method, params, (field, m.filename, m.mimetype)))
            if not caption:
                steps += self._text_steps(chat, html)
        else:
            steps = self._text_steps(chat, html)
        if not steps:
            raise ValueError("The message is empty.")
        reply = mapping.reply_parameters(message.reply_to_remote_id)
        if reply:
            steps[0].params["reply_parameters"] = reply
        keyboard = mapping.inline_keyboard(message.buttons)
        if keyboard:
            steps[-1].params["reply_markup"] = keyboard
        return steps

    @staticmethod
    def _text_steps(chat: int | str, html: str) -> list[_Step]:
        return [
            _Step(
                "sendMessage",
                {"chat_id": chat, "text": part, "parse_mode": "HTML"},
                plain_fallback=plain_text(part),
            )
            for part in split_html(html, mapping.TEXT_LIMIT)
        ]

    async def _run(self, step: _Step, data: bytes) -> Any:
        try:
            if step.upload is None:
                return await self.client.call(step.method, step.params)
            field, filename, mimetype = step.upload
            return await self.client.upload(
                step.method, step.params, field, data, filename, mimetype
            )
        except ExternalError as exc:
            if exc.code != "bad_formatting" or step.plain_fallback is None:
                raise
            # Our HTML should always parse; if Telegram disagrees, the words still matter
            # more than the formatting.
            log.warning("telegram refused the formatting of a message; sending it plain")
            params = {k: v for k, v in step.params.items() if k != "parse_mode"}
            params["text"] = step.plain_fallback
            return await self.client.call(step.method, params)

    async def send_reaction(self, external_id: str, target_remote_id: str, emoji: str) -> None:
        params = mapping.reaction_parameters(target_remote_id, emoji)
        if params is None:
            log.info("telegram: reaction to a non-message (%s) not sent", target_remote_id[:12])
            return
        await self.client.call("setMessageReaction", params)

    async def status_changed(self, external_id: str, message_ids: list[int], status: str) -> None:
        """Bots cannot mark a customer's messages as read in Telegram: nothing to do."""
