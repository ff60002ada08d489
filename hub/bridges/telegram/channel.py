"""The Telegram channel: a bot's private chats with customers, through the Bot API.

Webhook: POST /webhooks/telegram, authenticated by the X-Telegram-Bot-Api-Secret-Token header
that setWebhook asked Telegram to send (never a token in the URL). One Update per request,
mapped by the pure mapping and stored by the webhook pipeline, then answered with an empty
200. Telegram redelivers until it gets a 2xx, so an error storing it answers 500 on purpose.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from hub.bridges.base import Capabilities, Channel, ChannelDeps, Refusal
from hub.bridges.http import same_secret
from hub.bridges.telegram import mapping
from hub.bridges.telegram.client import TelegramClient
from hub.bridges.telegram.errors import MESSAGE_GONE, NOT_MODIFIED
from hub.bridges.telegram.markup import (
    escape_text,
    plain_text,
    split_html,
    to_telegram_html,
    visible_length,
)
from hub.config import TelegramConfig
from hub.core.types import MediaRef, OutboundMessage, Parsed
from hub.errors import ExternalError
from hub.i18n import _

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
CALLBACK_ANSWER_TIMEOUT = 10.0  # the button's spinner is cosmetic: never wait long
_PROGRESS_MAX = 1000
WEBHOOK_PORTS = (443, 80, 88, 8443)  # the only ports Telegram's servers call


def checked_webhook_url(public_base: str, config: TelegramConfig) -> str:
    """The URL to register, refused early (with what to change) when Telegram's own servers
    could never call it: they need https on one of four ports. A local Bot API server or a
    test stand-in (another api_base_url) takes any URL."""
    url = public_base + WEBHOOK_PATH
    if urlsplit(str(config.api_base_url)).hostname != "api.telegram.org":
        return url
    parts = urlsplit(url)
    if parts.scheme != "https" or (parts.port or 443) not in WEBHOOK_PORTS:
        raise ExternalError(
            _(
                "Telegram only calls https webhooks on port 443, 80, 88 or 8443, not {url}: set "
                "http.public_url to the hub's public https address"
            ).format(url=url),
            permanent=True,
            code="bad_webhook_url",
        )
    return url


def webhook_parameters(config: TelegramConfig, url: str) -> dict[str, Any]:
    return {
        "url": url,
        "secret_token": config.webhook_secret,
        "allowed_updates": mapping.ALLOWED_UPDATES,
    }


def client_for(http: Any, config: TelegramConfig) -> TelegramClient:
    return TelegramClient(
        http,
        str(config.api_base_url),
        config.bot_token,
        timeout=config.request_timeout_seconds,
        max_download_bytes=config.max_media_bytes,
    )


@dataclass(frozen=True)
class _Step:
    """One Bot API call of an outbound message (long texts take several)."""

    method: str
    params: dict[str, Any]
    upload: tuple[str, str, str] | None = None  # (field, filename, mimetype)
    plain_fallback: str | None = None  # the text without formatting, if Telegram refuses it
    fallback_field: str = "text"  # where the plain text goes (a caption's edit: "caption")


class TelegramChannel(Channel):
    kind = mapping.KIND
    code = "tg"
    label = "Telegram"
    # Bots may edit their messages in private chats and delete them within 48 hours
    # (editMessageText, editMessageCaption, deleteMessage).
    capabilities = Capabilities(buttons=True, reactions=True, edits=True, deletes=True)
    webhook_path = WEBHOOK_PATH

    def __init__(self, deps: ChannelDeps, config: TelegramConfig) -> None:
        super().__init__(deps)
        self.config = config
        self.client = client_for(deps.http, config)
        # None: the catalogue's greeting in the shop's language; "": no greeting.
        if config.start_greeting is None:
            self.start_greeting = _(
                "Hello! Write us your question and an adviser will answer here."
            )
        else:
            self.start_greeting = config.start_greeting or None
        self._tasks: set[asyncio.Task[None]] = set()
        # Parts of split messages already sent, so a retry does not send them twice.
        self._progress: dict[int, list[str]] = {}

    # -- lifecycle -----------------------------------------------------------------------

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
        url = checked_webhook_url(self.deps.public_base, self.config)
        await self.client.call("setWebhook", webhook_parameters(self.config, url))
        return url

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    # -- inbound -------------------------------------------------------------------------

    def verify(self, raw: bytes, headers: Mapping[str, str]) -> Refusal | None:
        given = headers.get(SECRET_HEADER)
        if given is None:
            return Refusal(401, "missing secret token", f"telegram webhook without {SECRET_HEADER}")
        if not same_secret(given, self.config.webhook_secret):
            return Refusal(403, "wrong secret token", "telegram webhook with a wrong secret token")
        return None

    def parse(self, doc: dict[str, Any]) -> Parsed:
        return mapping.parse_update(doc)

    def acknowledgement(self) -> web.Response:
        # An empty 200: a JSON body with "method" would be run by Telegram as an API call.
        return web.Response(status=200)

    async def after_store(self, parsed: Parsed) -> None:
        # After the update is stored: the answer only stops the button's spinner.
        for callback_query_id in parsed.acks:
            task = asyncio.create_task(self._answer_callback(callback_query_id))
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
            raise ExternalError(_("The file has no Telegram id."), permanent=True, code="bad_file")
        info = await self.client.call("getFile", {"file_id": media.remote_id})
        size = info.get("file_size") if isinstance(info, dict) else None
        if isinstance(size, int) and size > self.client.max_download_bytes:
            raise ExternalError(
                _(
                    "The customer's file is larger than the hub accepts "
                    "(channels.telegram.max_media_bytes)."
                ),
                permanent=True,
                code="file_too_big",
            )
        path = info.get("file_path") if isinstance(info, dict) else None
        if not isinstance(path, str) or not path:
            raise ExternalError(
                _("Telegram gave no download path for the file."), permanent=True, code="bad_file"
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
            raise ExternalError(_("The file is not in the hub's store."), permanent=True)
        try:
            return await self.deps.media.read(media.media_id)
        except FileNotFoundError:
            raise ExternalError(_("The file is no longer stored."), permanent=True) from None

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
            raise ValueError(_("The message is empty."))
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
            params[step.fallback_field] = step.plain_fallback
            return await self.client.call(step.method, params)

    async def send_reaction(self, external_id: str, target_remote_id: str, emoji: str) -> None:
        params = mapping.reaction_parameters(target_remote_id, emoji)
        if params is None:
            log.info("telegram: reaction to a non-message (%s) not sent", target_remote_id[:12])
            return
        await self.client.call("setMessageReaction", params)

    async def edit_message(self, message: OutboundMessage, remote_id: str) -> None:
        """editMessageCaption for a file, editMessageText for a text. A long text was sent
        in parts and only the first is known: the new text must fit in one."""
        target = mapping.parse_message_remote_id(remote_id)
        if target is None:
            raise ExternalError(_("Telegram cannot edit this message."), permanent=True)
        if message.html:
            html = to_telegram_html(message.html)
        else:
            html = escape_text((message.text or "").strip())
        params: dict[str, Any] = {"chat_id": mapping.chat_id(target[0]), "message_id": target[1]}
        if message.media:
            if visible_length(html) > mapping.CAPTION_LIMIT:
                raise ExternalError(
                    _("The new caption is too long for Telegram."), permanent=True, code="too_long"
                )
            step = _Step(
                "editMessageCaption",
                params | {"caption": html, "parse_mode": "HTML"},
                plain_fallback=plain_text(html),
                fallback_field="caption",
            )
        else:
            if not html.strip():
                raise ExternalError(_("The message is empty."), permanent=True)
            if visible_length(html) > mapping.TEXT_LIMIT:
                raise ExternalError(
                    _("The new text is too long for one Telegram message."),
                    permanent=True,
                    code="too_long",
                )
            step = _Step(
                "editMessageText",
                params | {"text": html, "parse_mode": "HTML"},
                plain_fallback=plain_text(html),
            )
        keyboard = mapping.inline_keyboard(message.buttons)
        if keyboard:
            step.params["reply_markup"] = keyboard  # an edit without it removes the buttons
        try:
            await self._run(step, b"")
        except ExternalError as exc:
            if exc.code != NOT_MODIFIED:
                raise
            # The text is what the customer sees already (a retry after a lost answer).

    async def delete_message(self, external_id: str, remote_id: str, message_id: int) -> None:
        target = mapping.parse_message_remote_id(remote_id)
        if target is None:
            raise ExternalError(_("Telegram cannot delete this message."), permanent=True)
        params = {"chat_id": mapping.chat_id(target[0]), "message_id": target[1]}
        try:
            await self.client.call("deleteMessage", params)
        except ExternalError as exc:
            if exc.code != MESSAGE_GONE:
                raise
            # Gone already: deleted by an earlier attempt, or by the customer.

    async def status_changed(self, external_id: str, message_ids: list[int], status: str) -> None:
        """Bots cannot mark a customer's messages as read in Telegram: nothing to do."""
