"""HTTP surface of the web chat: session, messages, uploads, live websocket, media, widget.

Every request is authenticated by the visitor's token (kept in the browser; only its hash
is stored). Input is validated before anything is written; a customer's message, text or
file, goes the one way in (hub.core.ingest) like every channel's: stored with its Matrix
delivery job in one transaction, deduplicated by the widget's client_id.

A tapped reply button is a message POST with `button_id` (the button's id, as the
message's `buttons` gave it): it must be a button of a message the shop sent to this
visitor, and is stored as an "interactive" message like the other channels' taps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, WSMsgType, web
from babel.numbers import format_decimal

from hub.bridges.webchat.channel import KIND, WebchatChannel, message_json
from hub.bridges.webchat.texts import widget_texts
from hub.core.media import image_type, safe_filename
from hub.core.types import Envelope, InboundMessage, MediaRef, MessageKind, Sender
from hub.db import conversations, media, receipts, webchat
from hub.db.models import Message
from hub.http.pages import page_language
from hub.i18n import _, current_locale

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[3] / "web"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_MAX_BUTTON_ID = 256  # WhatsApp's limit for a reply button's id
_MAX_NAME = 80
_WS_AUTH_TIMEOUT = 10.0
# Token hash -> visitor id, remembered briefly so a message costs no extra transaction for
# authentication. The id behind a token never changes; the name is read when storing.
_AUTH_TTL = 60.0
_AUTH_CACHE_MAX = 10_000


@dataclass(frozen=True)
class VisitorRef:
    """An authenticated visitor (the name as of authentication: for display only)."""

    visitor_id: str
    name: str | None


def _error(status: int, text: str, **extra: Any) -> web.Response:
    return web.json_response({"error": text, **extra}, status=status)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _clean_text(value: object, limit: int) -> str:
    """Customer text as it may be stored: a str, valid UTF-8, not blank, not too long. The
    reasons are the customer's to read (the widget shows them); errors only a broken client
    makes (JSON, client_id, token) stay English."""
    if not isinstance(value, str):
        raise ValueError(_("The text must be a string."))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(_("The text is not valid Unicode (lone surrogate).")) from None
    value = value.replace("\r\n", "\n").replace("\x00", "").strip()
    if not value:
        raise ValueError(_("The text is empty."))
    if len(value) > limit:
        raise ValueError(
            _("The text is too long ({length} characters, at most {limit}).").format(
                length=_number(len(value)), limit=_number(limit)
            )
        )
    return value


def _number(n: int) -> str:
    return format_decimal(n, locale=current_locale())


def _too_large(cap: int) -> web.Response:
    megabytes = format_decimal(round(cap / (1024 * 1024), 1), locale=current_locale())
    text = _("The file is too large (at most {size} MB).").format(size=megabytes)
    return _error(413, text, max_bytes=cap)


class WebchatApi:
    def __init__(self, channel: WebchatChannel) -> None:
        self.channel = channel
        self.db = channel.deps.db
        self.store = channel.deps.media
        self.public_base = channel.deps.public_base
        self.cfg = channel.config
        base = self.public_base
        self.allowed_origins = {base.split("/", 3)[0] + "//" + base.split("/", 3)[2]}
        self.allowed_origins |= set(self.cfg.allowed_origins)
        self._known: dict[str, tuple[float, VisitorRef]] = {}

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/webchat/widget.js", self.widget_js)
        r.add_route("OPTIONS", "/webchat/api/{tail:.*}", self.preflight)
        r.add_post("/webchat/api/session", self.session)
        r.add_get("/webchat/api/messages", self.list_messages)
        r.add_post("/webchat/api/messages", self.post_message)
        r.add_post("/webchat/api/upload", self.upload)
        r.add_get("/webchat/ws", self.websocket)
        r.add_get("/webchat/media/{media_id}", self.media)
        app.middlewares.append(self._cors)

    # -- plumbing ------------------------------------------------------------------------

    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            resp: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            # Raised errors need the header too, or the browser hides a 401/400 from the
            # widget as a network error and it can never recover or show the reason.
            self._allow_origin(request, exc)
            raise
        self._allow_origin(request, resp)
        return resp

    def _allow_origin(self, request: web.Request, resp: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin and request.path.startswith("/webchat/") and origin in self.allowed_origins:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"

    async def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if origin not in self.allowed_origins:
            log.info("webchat: preflight from origin %r refused", origin)
            return web.Response(status=403)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            },
        )

    async def _visitor_ref(self, token: str | None) -> VisitorRef | None:
        if not token or len(token) > 200:
            return None
        token_hash = _hash(token)
        now = time.monotonic()
        known = self._known.get(token_hash)
        if known is not None and known[0] > now:
            return known[1]
        found = await self.db.read(webchat.visitor_by_token_hash, token_hash)
        if found is None:
            return None
        if len(self._known) >= _AUTH_CACHE_MAX:
            self._known.clear()
        ref = VisitorRef(*found)
        self._known[token_hash] = (now + _AUTH_TTL, ref)
        return ref

    async def _auth(self, request: web.Request) -> VisitorRef:
        header = request.headers.get("Authorization", "")
        visitor = await self._visitor_ref(header[7:] if header.startswith("Bearer ") else None)
        if visitor is None:
            log.info("webchat: request with unknown token from %s", request.remote)
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "unknown or missing session token"}),
                content_type="application/json",
            )
        return visitor

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            log.info("webchat: malformed JSON from %s", request.remote)
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "body is not valid JSON"}),
                content_type="application/json",
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "body must be a JSON object"}),
                content_type="application/json",
            )
        return body

    # -- handlers ------------------------------------------------------------------------

    async def widget_js(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            WEB_DIR / "static" / "widget.js",
            headers={"Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache"},
        )

    async def session(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        name = body.get("name")
        if name is not None:
            try:
                name = _clean_text(name, _MAX_NAME)
            except ValueError as exc:
                return _error(400, _("Name: {error}").format(error=exc))
        token = body.get("token") if isinstance(body.get("token"), str) else None
        known = _hash(token) if token and len(token) <= 200 else None
        new_token = secrets.token_urlsafe(32)
        visitor, created = await self.db.write(webchat.open_session, known, _hash(new_token), name)
        if created:
            token = new_token
        assert token is not None
        self._known.pop(_hash(token), None)
        return web.json_response(
            {
                "token": token,
                "visitor_id": visitor.visitor_id,
                "name": visitor.name,
                # None in the config: the catalogue's text in the shop's language.
                "title": _("Chat with us") if self.cfg.title is None else self.cfg.title,
                "welcome_text": (
                    _("Hello! How can we help you today?")
                    if self.cfg.welcome_text is None
                    else self.cfg.welcome_text
                ),
                "max_upload_bytes": self.cfg.max_upload_bytes,
                "lang": page_language(),
                "texts": widget_texts(),
            }
        )

    async def _history(self, visitor_id: str, after: int) -> list[dict[str, Any]]:
        rows = await self.db.read(webchat.history, visitor_id, after)
        return [message_json(m, self.public_base) for m in rows]

    async def list_messages(self, request: web.Request) -> web.Response:
        visitor = await self._auth(request)
        try:
            after = max(0, int(request.query.get("after", "0")))
        except ValueError:
            return _error(400, "after must be a message id (a whole number)")
        return web.json_response({"messages": await self._history(visitor.visitor_id, after)})

    async def post_message(self, request: web.Request) -> web.Response:
        visitor = await self._auth(request)
        body = await self._json(request)
        client_id = body.get("client_id")
        if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
            return _error(400, "client_id must be 8–64 characters of A–Z, a–z, 0–9, - or _")
        remote_id = f"{visitor.visitor_id}:{client_id}"
        if body.get("button_id") is not None:
            return await self._tap(visitor, remote_id, body["button_id"])
        try:
            text = _clean_text(body.get("text"), self.cfg.max_text_chars)
        except ValueError as exc:
            return _error(400, str(exc))
        return await self._store(visitor, InboundMessage(remote_id, "text", text=text))

    async def _tap(self, visitor: VisitorRef, remote_id: str, button_id: object) -> web.Response:
        """A reply button tapped: stored as the other channels store a tap, with the title
        the shop gave the button (the widget's `text` is only its echo) and as an answer to
        the message that carried it."""
        if not isinstance(button_id, str) or not 0 < len(button_id) <= _MAX_BUTTON_ID:
            log.info("webchat: visitor %s sent a malformed button_id", visitor.visitor_id)
            return _error(400, f"button_id must be a string of 1–{_MAX_BUTTON_ID} characters")
        button = await self.db.read(webchat.button_of, visitor.visitor_id, button_id)
        if button is None:
            log.warning(
                "webchat: visitor %s sent button_id %r, a button of no message of theirs",
                visitor.visitor_id,
                button_id[:80],
            )
            return _error(400, "button_id is not a button of a message of this conversation")
        inbound = InboundMessage(
            remote_id,
            "interactive",
            text=button.title,
            reply_to_remote_id=button.remote_id,
            data={"id": button_id, "title": button.title},
        )
        return await self._store(visitor, inbound)

    async def upload(self, request: web.Request) -> web.Response:
        visitor = await self._auth(request)
        cap = self.cfg.max_upload_bytes
        if request.content_length and request.content_length > cap + 64 * 1024:
            return _too_large(cap)
        try:
            reader = await request.multipart()
        except (ValueError, AssertionError):
            return _error(400, "expected a multipart/form-data upload")
        client_id, caption, data, filename, ctype = None, None, None, None, None
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not something the widget sends
            if part.name == "file":
                filename, ctype = part.filename, part.headers.get("Content-Type")
                chunks, size = [], 0
                while chunk := await part.read_chunk(65536):
                    size += len(chunk)
                    if size > cap:
                        log.info("webchat: upload over %d bytes refused", cap)
                        return _too_large(cap)
                    chunks.append(chunk)
                data = b"".join(chunks)
            elif part.name in ("client_id", "caption"):
                value = (await part.read(decode=True))[:8192].decode("utf-8", "replace")
                if part.name == "client_id":
                    client_id = value
                else:
                    caption = value.strip() or None
        if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
            return _error(400, "client_id must be 8–64 characters of A–Z, a–z, 0–9, - or _")
        if not data:
            return _error(400, _("The file is missing or empty."))
        proven = image_type(data)
        mimetype = (
            proven
            or (ctype if ctype and "/" in ctype and not ctype.startswith("image/") else None)
            or "application/octet-stream"
        )
        stored = await self.store.write(data, safe_filename(filename, mimetype), mimetype)
        ref = MediaRef(
            stored.filename, mimetype, stored.size, stored.media_id, sha256=stored.sha256
        )
        kind: MessageKind = "image" if proven else "file"
        inbound = InboundMessage(f"{visitor.visitor_id}:{client_id}", kind, caption, ref)
        return await self._store(visitor, inbound)

    async def _store(self, visitor: VisitorRef, inbound: InboundMessage) -> web.Response:
        """A visitor's message through the one way in; the one stored before under the same
        client_id answers 200 instead of 201."""
        sender = Sender(KIND, visitor.visitor_id, visitor.name)
        result = await self.channel.ingest(self.channel, [Envelope(sender, inbound)])
        status = 201
        if result.messages:
            message: Message | None = result.messages[0]
        else:
            status = 200
            message = await self.db.read(
                conversations.message_by_remote_id, KIND, inbound.remote_id
            )
        if message is None:  # cannot happen: stored now or before
            raise web.HTTPInternalServerError()
        payload = message_json(message, self.public_base)
        if status == 201:
            await self.channel.push(visitor.visitor_id, payload)
        return web.json_response({"message": payload}, status=status)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=25, max_msg_size=4096)
        await ws.prepare(request)
        visitor: VisitorRef | None = None
        try:
            first = await ws.receive(timeout=_WS_AUTH_TIMEOUT)
            auth = json.loads(first.data) if first.type == WSMsgType.TEXT else None
            if isinstance(auth, dict) and auth.get("type") == "auth":
                token = auth.get("token")
                visitor = await self._visitor_ref(token if isinstance(token, str) else None)
            if visitor is None:
                await ws.send_json({"type": "error", "error": "unknown or missing session token"})
                await ws.close()
                return ws
            after = auth.get("after") if isinstance(auth.get("after"), int) else 0  # type: ignore[union-attr]
            # Register before reading the backlog so nothing falls between the two.
            self.channel.sockets[visitor.visitor_id].add(ws)
            await ws.send_json({"type": "ready"})
            for message in await self._history(visitor.visitor_id, max(0, after)):
                await ws.send_json({"type": "message", "message": message})
            last_read = 0
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                doc = json.loads(msg.data)
                kind = doc.get("type") if isinstance(doc, dict) else None
                if kind == "ping":
                    await ws.send_json({"type": "pong"})
                elif kind == "read" and isinstance(doc.get("up_to"), int):
                    if doc["up_to"] > last_read:
                        last_read = doc["up_to"]
                        await self._customer_read(visitor.visitor_id, last_read)
        except (TimeoutError, ValueError, asyncio.CancelledError, ConnectionError):
            pass
        finally:
            if visitor is not None:
                self.channel.sockets[visitor.visitor_id].discard(ws)
        return ws

    async def _customer_read(self, visitor_id: str, up_to: int) -> None:
        await self.db.write(receipts.customer_read, KIND, visitor_id, up_to, self.channel.domain)

    async def media(self, request: web.Request) -> web.StreamResponse:
        media_id = request.match_info["media_id"]
        if not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", media_id):
            raise web.HTTPNotFound()
        row = await self.db.read(media.media_by_id, media_id)
        path = self.store.path(media_id)
        if row is None or not path.exists():
            raise web.HTTPNotFound()
        inline = row.mimetype in ("image/png", "image/jpeg", "image/gif", "image/webp")
        disposition = "inline" if inline else "attachment"
        ascii_name = row.filename.encode("ascii", "replace").decode().replace("?", "_")
        return web.FileResponse(
            path,
            headers={
                "Content-Type": row.mimetype,
                "Content-Disposition": (
                    f'{disposition}; filename="{ascii_name}"; '
                    f"filename*=UTF-8''{quote(row.filename)}"
                ),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox; default-src 'none'",
                "Cache-Control": "private, max-age=86400",
                "Access-Control-Allow-Origin": "*",
            },
        )
