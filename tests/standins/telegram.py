"""A loopback stand-in of the Telegram Bot API, and of Telegram's side of the webhook.

API (what the hub calls): `/bot<token>/<method>` with GET or POST, parameters as query
string, JSON, urlencoded or multipart (files), answers `{"ok": true, "result": ...}` or the
documented error body `{"ok": false, "error_code", "description", "parameters"?}`; file
downloads at `/file/bot<token>/<file_path>`. Malformed tokens get 401 "Unauthorized: invalid
token specified", other wrong tokens 401 "Unauthorized", unknown methods 404 "Not Found" (as
tdlib/telegram-bot-api answers). Like Telegram it refuses chats it never saw ("chat not
found"), invalid HTML ("can't parse entities"), texts over 4096 and captions over 1024
characters, reactions outside its list, blocked chats (403) and unknown callback query ids.
Edits (editMessageText, editMessageCaption) and deleteMessage change its record of the bot's
messages (`messages`, `deleted`) and answer as Telegram does: "message is not modified" for
an unchanged edit, "message to edit/delete not found", "message can't be deleted for
everyone" after 48 hours, "there is no text/caption in the message to edit".
Every request is recorded; the next N calls can fail with a documented error or be delayed.

Webhooks (what Telegram sends): Update builders and `send_update`, which POSTs the JSON to the
URL registered with setWebhook (or `hub_url` + /webhooks/telegram) with the
X-Telegram-Bot-Api-Secret-Token header.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from html import unescape
from typing import Any

import aiohttp
from aiohttp import web

from tests.standins.loopback import serve_on_loopback

SEND_FILE_METHODS = {
    "sendPhoto": "photo",
    "sendDocument": "document",
    "sendAudio": "audio",
    "sendVoice": "voice",
    "sendVideo": "video",
    "sendAnimation": "animation",
}
# ReactionTypeEmoji: the emoji Telegram accepts (https://core.telegram.org/bots/api#reactiontypeemoji).
REACTIONS = set(
    "👍 👎 ❤ 🔥 🥰 👏 😁 🤔 🤯 😱 🤬 😢 🎉 🤩 🤮 💩 🙏 👌 🕊 🤡 🥱 🥴 😍 🐳 🌚 🌭 💯".split()
)
REACTIONS |= set(
    "🤣 ⚡ 🍌 🏆 💔 🤨 😐 🍓 🍾 💋 🖕 😈 😴 😭 🤓 👻 👀 🎃 🙈 😇 😨 🤝 ✍ 🤗 🫡 🎅".split()
)
REACTIONS |= set("🎄 ☃ 💅 🤪 🗿 🆒 💘 🙉 🦄 😘 💊 🙊 😎 👾 🤷 😡".split())
_TOKEN_SHAPE = re.compile(r"^[1-9]\d*:[\w-]+$")


@dataclass
class Failure:
    """A documented Bot API error answer."""

    error_code: int
    description: str
    retry_after: int | None = None

    def body(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.retry_after is not None:
            doc["parameters"] = {"retry_after": self.retry_after}
        return doc


def rate_limited(retry_after: int) -> Failure:
    return Failure(429, f"Too Many Requests: retry after {retry_after}", retry_after)


BLOCKED = Failure(403, "Forbidden: bot was blocked by the user")
CHAT_NOT_FOUND = Failure(400, "Bad Request: chat not found")
SERVER_ERROR = Failure(500, "Internal Server Error")


@dataclass
class Recorded:
    method: str  # the Bot API method, e.g. "sendMessage" ("file" for downloads)
    http_method: str
    headers: dict[str, str]
    params: dict[str, Any]
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)  # name, type, data
    ok: bool = False  # answered with ok: true
    at: float = field(default_factory=time.monotonic)


class TelegramStandin:
    def __init__(self) -> None:
        self.token = f"7000000001:AA{secrets.token_urlsafe(24)}"
        self.secret = secrets.token_hex(16)
        self.bot = {"id": 7000000001, "is_bot": True, "first_name": "Shop", "username": "shopbot"}
        self.calls: list[Recorded] = []
        self.webhook: dict[str, Any] | None = None
        self.hub_url: str | None = None  # fallback webhook target before setWebhook
        self.chats: dict[int, dict[str, Any]] = {}
        self.blocked: set[int] = set()
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.deleted: set[tuple[int, int]] = set()  # (chat, message) removed by deleteMessage
        self.files: dict[str, tuple[bytes, str, str]] = {}  # file_id -> data, path, mimetype
        self.callbacks: set[str] = set()
        self._failures: list[list[Any]] = []  # [methods or None, failure, calls to let pass]
        self._delays: list[float] = []
        self._next_update = 50_000
        self._next_message: dict[int, int] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- server ----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner, self.base_url = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def hub_config(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "api_base_url": self.base_url,
            "bot_token": self.token,
            "webhook_secret": self.secret,
            "request_timeout_seconds": 5,
            "set_webhook_on_start": True,
        }

    # -- test controls -----------------------------------------------------------------------

    def fail_next(
        self, n: int, failure: Failure, methods: set[str] | None = None, after: int = 0
    ) -> None:
        """The next n calls (of these methods, or any) answer `failure`, once `after` such
        calls have gone through."""
        self._failures.append([methods, failure, after])
        self._failures += [[methods, failure, 0] for _ in range(n - 1)]

    def delay_next(self, seconds: float, n: int = 1) -> None:
        self._delays += [seconds] * n

    def calls_of(self, method: str, chat_id: int | None = None) -> list[Recorded]:
        return [
            c
            for c in self.calls
            if c.method == method
            and (chat_id is None or str(c.params.get("chat_id")) == str(chat_id))
        ]

    def sent_to(self, chat_id: int) -> list[Recorded]:
        """Successful sends to a chat, in order."""
        return [
            c
            for c in self.calls
            if c.method.startswith("send") and str(c.params.get("chat_id")) == str(chat_id) and c.ok
        ]

    def add_file(self, data: bytes, mimetype: str, path: str | None = None) -> str:
        file_id = "AgAC" + secrets.token_urlsafe(18)
        self.files[file_id] = (data, path or f"documents/file_{len(self.files)}", mimetype)
        return file_id

    def file_bytes(self, file_id: str) -> bytes:
        return self.files[file_id][0]

    # -- dispatch ----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        path = request.path
        if path.startswith("/file/bot"):
            await self._delay()
            return await self._download(request, path[len("/file/bot") :])
        if not path.startswith("/bot") or path.count("/") != 2:
            return _error(Failure(404, "Not Found"))
        token, _, method = path[len("/bot") :].partition("/")
        params, files = await _params(request)
        rec = Recorded(method, request.method, dict(request.headers), params, files)
        self.calls.append(rec)
        await self._delay()
        if not _TOKEN_SHAPE.match(token):
            return _error(Failure(401, "Unauthorized: invalid token specified"))
        if token != self.token:
            return _error(Failure(401, "Unauthorized"))
        for n, entry in enumerate(self._failures):
            if entry[0] is None or method in entry[0]:
                if entry[2] > 0:
                    entry[2] -= 1
                    break
                del self._failures[n]
                return _error(entry[1])
        if method in SEND_FILE_METHODS:
            result = self._send_file(method, params, files)
        else:
            handler = getattr(self, f"_m_{method.lower()}", None)
            if handler is None:
                return _error(Failure(404, "Not Found"))
            result = handler(params, files)
        if isinstance(result, Failure):
            return _error(result)
        rec.ok = True
        return web.json_response({"ok": True, "result": result})

    async def _delay(self) -> None:
        if self._delays:
            await asyncio.sleep(self._delays.pop(0))

    async def _download(self, request: web.Request, rest: str) -> web.Response:
        token, _, file_path = rest.partition("/")
        self.calls.append(
            Recorded("file", request.method, dict(request.headers), {"path": file_path})
        )
        if token != self.token:
            return _error(Failure(404, "Not Found"))
        for data, path, mimetype in self.files.values():
            if path == file_path:
                return web.Response(body=data, content_type=mimetype)
        return _error(Failure(404, "Not Found"))

    # -- methods (one per Bot API method the hub uses) -----------------------------------------

    def _m_getme(self, p: dict[str, Any], f: Any) -> Any:
        return self.bot

    def _m_setwebhook(self, p: dict[str, Any], f: Any) -> Any:
        secret = p.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            return Failure(400, "Bad Request: secret token contains unallowed characters")
        self.webhook = {
            "url": p.get("url", ""),
            "secret_token": secret,
            "allowed_updates": p.get("allowed_updates"),
        }
        return True

    def _m_getwebhookinfo(self, p: dict[str, Any], f: Any) -> Any:
        hook = self.webhook or {}
        return {
            "url": hook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": 0,
            "allowed_updates": hook.get("allowed_updates") or [],
        }

    def _m_deletewebhook(self, p: dict[str, Any], f: Any) -> Any:
        self.webhook = None
        return True

    def _chat(self, p: dict[str, Any]) -> dict[str, Any] | Failure:
        try:
            chat_id = int(p.get("chat_id"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return Failure(400, "Bad Request: chat_id is empty")
        if chat_id not in self.chats:
            return CHAT_NOT_FOUND
        if chat_id in self.blocked:
            return BLOCKED
        return self.chats[chat_id]

    def _check_common(self, p: dict[str, Any], chat: dict[str, Any]) -> Failure | None:
        reply = p.get("reply_parameters")
        if isinstance(reply, dict):
            key = (chat["id"], int(reply.get("message_id", 0)))
            if key not in self.messages and not reply.get("allow_sending_without_reply"):
                return Failure(400, "Bad Request: message to be replied not found")
        markup = p.get("reply_markup")
        if markup is not None:
            rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
            if not isinstance(rows, list):
                return Failure(400, "Bad Request: can't parse reply keyboard markup JSON object")
            for button in (b for row in rows for b in row):
                data = button.get("callback_data")
                if not button.get("text") or (
                    data is not None and not 1 <= len(data.encode()) <= 64
                ):
                    return Failure(400, "Bad Request: BUTTON_DATA_INVALID")
        return None

    def _store(self, chat: dict[str, Any], content: dict[str, Any], p: dict[str, Any]) -> Any:
        mid = self.next_message_id(chat["id"])
        msg = {"message_id": mid, "from": self.bot, "chat": chat, "date": int(time.time())}
        msg |= content
        if p.get("reply_markup"):
            msg["reply_markup"] = p["reply_markup"]
        self.messages[(chat["id"], mid)] = msg
        return msg

    def _m_sendmessage(self, p: dict[str, Any], f: Any) -> Any:
        chat = self._chat(p)
        if isinstance(chat, Failure):
            return chat
        text = str(p.get("text") or "")
        if p.get("parse_mode") == "HTML":
            problem = check_html(text)
            if problem:
                return Failure(400, f"Bad Request: can't parse entities: {problem}")
            text = unescape(re.sub(r"<[^>]*>", "", text))
        if not text.strip():
            return Failure(400, "Bad Request: message text is empty")
        if _utf16(text) > 4096:
            return Failure(400, "Bad Request: message is too long")
        return self._check_common(p, chat) or self._store(chat, {"text": text}, p)

    def _send_file(self, method: str, p: dict[str, Any], files: dict[str, Any]) -> Any:
        chat = self._chat(p)
        if isinstance(chat, Failure):
            return chat
        field_name = SEND_FILE_METHODS[method]
        upload = files.get(field_name)
        if upload is None and p.get(field_name) not in self.files:
            return Failure(400, f"Bad Request: there is no {field_name} in the request")
        caption = str(p.get("caption") or "")
        if p.get("parse_mode") == "HTML" and caption:
            problem = check_html(caption)
            if problem:
                return Failure(400, f"Bad Request: can't parse entities: {problem}")
            caption = unescape(re.sub(r"<[^>]*>", "", caption))
        if _utf16(caption) > 1024:
            return Failure(400, "Bad Request: message caption is too long")
        problem = self._check_common(p, chat)
        if problem:
            return problem
        name, ctype, data = upload if upload else ("file", self.files[p[field_name]][2], b"")
        file_id = self.add_file(data, ctype, f"{field_name}s/{name}") if upload else p[field_name]
        ref = {"file_id": file_id, "file_unique_id": file_id[-8:], "file_size": len(data)}
        if field_name == "photo":
            content: dict[str, Any] = {"photo": [ref | {"width": 2, "height": 2}]}
        else:
            content = {field_name: ref | {"file_name": name, "mime_type": ctype}}
        if caption:
            content["caption"] = caption
        return self._store(chat, content, p)

    def _m_setmessagereaction(self, p: dict[str, Any], f: Any) -> Any:
        chat = self._chat(p)
        if isinstance(chat, Failure):
            return chat
        if (chat["id"], int(p.get("message_id") or 0)) not in self.messages:
            return Failure(400, "Bad Request: message to react not found")
        reaction = p.get("reaction") or []
        if len(reaction) > 1:
            return Failure(400, "Bad Request: REACTIONS_TOO_MANY")
        for r in reaction:
            if r.get("type") != "emoji" or r.get("emoji") not in REACTIONS:
                return Failure(400, "Bad Request: REACTION_INVALID")
        return True

    def _own_message(self, p: dict[str, Any], what: str) -> tuple[Any, ...] | Failure:
        """The bot's message `message_id` in `chat_id` that an edit or deletion is about."""
        chat = self._chat(p)
        if isinstance(chat, Failure):
            return chat
        key = (chat["id"], int(p.get("message_id") or 0))
        msg = self.messages.get(key)
        if msg is None or key in self.deleted:
            return Failure(400, f"Bad Request: message to {what} not found")
        return key, msg

    def _edited_text(self, p: dict[str, Any], field_name: str, limit: int) -> str | Failure:
        text = str(p.get(field_name) or "")
        if p.get("parse_mode") == "HTML":
            problem = check_html(text)
            if problem:
                return Failure(400, f"Bad Request: can't parse entities: {problem}")
            text = unescape(re.sub(r"<[^>]*>", "", text))
        if field_name == "text" and not text.strip():
            return Failure(400, "Bad Request: message text is empty")
        if _utf16(text) > limit:
            what = "message" if field_name == "text" else "message caption"
            return Failure(400, f"Bad Request: {what} is too long")
        return text

    def _edit(self, p: dict[str, Any], field_name: str, limit: int) -> Any:
        found = self._own_message(p, "edit")
        if isinstance(found, Failure):
            return found
        key, msg = found
        if msg.get("from", {}).get("id") != self.bot["id"]:
            return Failure(400, "Bad Request: message can't be edited")
        has_media = any(k in msg for k in SEND_FILE_METHODS.values())
        if field_name == "text" and "text" not in msg:
            return Failure(400, "Bad Request: there is no text in the message to edit")
        if field_name == "caption" and not has_media:
            return Failure(400, "Bad Request: there is no caption in the message to edit")
        text = self._edited_text(p, field_name, limit)
        if isinstance(text, Failure):
            return text
        markup = p.get("reply_markup")
        if msg.get(field_name, "") == text and msg.get("reply_markup") == markup:
            return Failure(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup of "
                "the message",
            )
        edited = {k: v for k, v in msg.items() if k != "reply_markup"}
        edited |= {field_name: text, "edit_date": int(time.time())}
        if markup:
            edited["reply_markup"] = markup
        self.messages[key] = edited
        return edited

    def _m_editmessagetext(self, p: dict[str, Any], f: Any) -> Any:
        return self._edit(p, "text", 4096)

    def _m_editmessagecaption(self, p: dict[str, Any], f: Any) -> Any:
        return self._edit(p, "caption", 1024)

    def _m_deletemessage(self, p: dict[str, Any], f: Any) -> Any:
        found = self._own_message(p, "delete")
        if isinstance(found, Failure):
            return found
        key, msg = found
        if time.time() - int(msg.get("date") or 0) > 48 * 3600:
            return Failure(400, "Bad Request: message can't be deleted for everyone")
        self.deleted.add(key)
        return True

    def _m_answercallbackquery(self, p: dict[str, Any], f: Any) -> Any:
        if str(p.get("callback_query_id")) not in self.callbacks:
            return Failure(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        return True

    def _m_getfile(self, p: dict[str, Any], f: Any) -> Any:
        file_id = str(p.get("file_id") or "")
        if file_id not in self.files:
            return Failure(400, "Bad Request: invalid file_id")
        data, path, _ = self.files[file_id]
        if len(data) > 20 * 1024 * 1024:
            return Failure(400, "Bad Request: file is too big")
        return {
            "file_id": file_id,
            "file_unique_id": file_id[-8:],
            "file_size": len(data),
            "file_path": path,
        }

    # -- updates (what Telegram sends to the hub) ------------------------------------------

    def private_chat(
        self, chat_id: int, first_name: str = "Test", last_name: str | None = None
    ) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": first_name}
        if last_name:
            chat["last_name"] = last_name
        self.chats.setdefault(chat_id, chat)
        return self.chats[chat_id]

    def next_message_id(self, chat_id: int) -> int:
        self._next_message[chat_id] = self._next_message.get(chat_id, 1000) + 1
        return self._next_message[chat_id]

    def _update(self, **content: Any) -> dict[str, Any]:
        self._next_update += 1
        return {"update_id": self._next_update, **content}

    def _user(self, chat_id: int) -> dict[str, Any]:
        chat = self.private_chat(chat_id)
        names = {k: chat[k] for k in ("first_name", "last_name") if k in chat}
        return {"id": chat_id, "is_bot": False, **names}

    def message_update(self, chat_id: int, **content: Any) -> dict[str, Any]:
        """A new message in a private chat (content: text=..., photo=[...], voice={...} ...)."""
        chat, user = self.private_chat(chat_id), self._user(chat_id)
        reply_to = content.pop("reply_to", None)
        msg = {
            "message_id": self.next_message_id(chat_id),
            "from": user,
            "chat": chat,
            "date": int(time.time()),
            **content,
        }
        if reply_to is not None:
            msg["reply_to_message"] = self.messages.get((chat_id, reply_to)) or {
                "message_id": reply_to,
                "chat": chat,
                "date": int(time.time()),
            }
        self.messages[(chat_id, msg["message_id"])] = msg
        return self._update(message=msg)

    def text_update(self, chat_id: int, text: str, **extra: Any) -> dict[str, Any]:
        return self.message_update(chat_id, text=text, **extra)

    def _file_ref(self, data: bytes, mimetype: str, path: str, **extra: Any) -> dict[str, Any]:
        file_id = self.add_file(data, mimetype, path)
        return {"file_id": file_id, "file_unique_id": file_id[-8:], "file_size": len(data)} | extra

    def photo_update(self, chat_id: int, data: bytes, caption: str | None = None) -> dict[str, Any]:
        n = len(self.files)
        sizes = [  # a thumbnail and the photo itself, as Telegram sends several sizes
            self._file_ref(
                b"\xff\xd8\xff thumb", "image/jpeg", f"photos/t{n}.jpg", width=90, height=90
            ),
            self._file_ref(data, "image/jpeg", f"photos/file_{n}.jpg", width=800, height=800),
        ]
        extra = {"caption": caption} if caption else {}
        return self.message_update(chat_id, photo=sizes, **extra)

    def voice_update(self, chat_id: int, data: bytes, duration: int = 3) -> dict[str, Any]:
        path = f"voice/file_{len(self.files)}.oga"
        voice = self._file_ref(data, "audio/ogg", path, duration=duration, mime_type="audio/ogg")
        return self.message_update(chat_id, voice=voice)

    def edit_update(self, chat_id: int, message_id: int, text: str) -> dict[str, Any]:
        msg = dict(self.messages[(chat_id, message_id)])
        msg |= {"text": text, "edit_date": int(time.time())}
        self.messages[(chat_id, message_id)] = msg
        return self._update(edited_message=msg)

    def bot_message(self, chat_id: int, text: str, buttons: list[tuple[str, str]]) -> int:
        """A message of the bot with an inline keyboard [(text, callback_data)], as if sent
        earlier; returns its message id (for `callback_update`)."""
        keyboard = {"inline_keyboard": [[{"text": t, "callback_data": d}] for t, d in buttons]}
        msg = self._store(self.private_chat(chat_id), {"text": text}, {"reply_markup": keyboard})
        return int(msg["message_id"])

    def reaction_update(self, chat_id: int, message_id: int, emoji: str) -> dict[str, Any]:
        new = [{"type": "emoji", "emoji": emoji}] if emoji else []
        return self._update(
            message_reaction={
                "chat": self.private_chat(chat_id),
                "message_id": message_id,
                "user": self._user(chat_id),
                "date": int(time.time()),
                "old_reaction": [],
                "new_reaction": new,
            }
        )

    def callback_update(self, chat_id: int, message_id: int, data: str) -> dict[str, Any]:
        """The customer pressed an inline button of the bot's message `message_id`."""
        cq_id = str(secrets.randbits(62))
        self.callbacks.add(cq_id)
        return self._update(
            callback_query={
                "id": cq_id,
                "from": self._user(chat_id),
                "message": self.messages[(chat_id, message_id)],
                "chat_instance": str(-chat_id * 7),
                "data": data,
            }
        )

    async def send_update(
        self, update: dict[str, Any], *, secret: str | None = "", url: str | None = None
    ) -> int:
        """POST an Update as Telegram does; `secret=None` sends no secret header, "" the
        registered one. Returns the HTTP status of the hub's answer."""
        raw = json.dumps(update, ensure_ascii=False).encode()
        return await self.post_raw(raw, secret=secret, url=url)

    async def post_raw(self, raw: bytes, *, secret: str | None = "", url: str | None = None) -> int:
        target = url or (self.webhook or {}).get("url")
        if not target:
            assert self.hub_url, "no webhook registered and no hub_url set"
            target = self.hub_url + "/webhooks/telegram"
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            registered = (self.webhook or {}).get("secret_token") or self.secret
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret or registered
        async with (
            aiohttp.ClientSession() as http,
            http.post(target, data=raw, headers=headers) as resp,
        ):
            await resp.read()
            return resp.status


_HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler"}
_HTML_TAGS |= {"a", "tg-emoji", "code", "pre", "blockquote"}
_HTML_TOKEN = re.compile(r"<[^<>]*>|&[^;&<>\s]*;?|[<>]|[^<>&]+")
_HTML_TAG = re.compile(r"<(/?)([a-zA-Z][\w-]*)(\s[^>]*)?>")
_HTML_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")


def check_html(text: str) -> str | None:
    """Why Telegram's HTML parse mode would refuse `text`, or None
    (https://core.telegram.org/bots/api#html-style)."""
    stack: list[str] = []
    for tok in _HTML_TOKEN.findall(text):
        if tok in ("<", ">"):
            return f'Unexpected "{tok}" (must be escaped)'
        if tok.startswith("&"):
            if not _HTML_ENTITY.fullmatch(tok):
                return f'Unsupported HTML entity "{tok}"'
            continue
        if not tok.startswith("<"):
            continue
        m = _HTML_TAG.fullmatch(tok)
        if not m or m.group(2).lower() not in _HTML_TAGS:
            return f"Unsupported start tag {tok!r}"
        closing, name, attrs = m.group(1), m.group(2).lower(), m.group(3) or ""
        if closing:
            if not stack or stack[-1] != name:
                return f"Can't find end tag corresponding to start tag {name!r}"
            stack.pop()
            continue
        if name == "span" and 'class="tg-spoiler"' not in attrs:
            return "Unsupported start tag 'span'"
        if "code" in stack or ("pre" in stack and name != "code"):
            return f"Entity {name!r} can't be inside pre or code"
        if name in ("a", "blockquote") and name in stack:
            return f"Entity {name!r} can't be nested"
        stack.append(name)
    if stack:
        return f"Can't find end tag corresponding to start tag {stack[-1]!r}"
    return None


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _error(failure: Failure) -> web.Response:
    status = failure.error_code if 400 <= failure.error_code < 600 else 400
    return web.json_response(failure.body(), status=status)


JSON_PARAMS = {
    "reply_markup",
    "reply_parameters",
    "allowed_updates",
    "reaction",
    "link_preview_options",
}


async def _params(request: web.Request) -> tuple[dict[str, Any], dict[str, tuple[str, str, bytes]]]:
    params: dict[str, Any] = dict(request.query)
    files: dict[str, tuple[str, str, bytes]] = {}
    ctype = request.content_type
    if ctype == "application/json":
        body = await request.json()
        params |= body if isinstance(body, dict) else {}
    elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files[key] = (value.filename, value.content_type, value.file.read())
            else:
                params[key] = value
    for key in JSON_PARAMS:
        if isinstance(params.get(key), str):
            try:
                params[key] = json.loads(params[key])
            except ValueError:
                params[key] = {"_unparsable": params[key]}
    return params, files
