"""HTTP surface of the web chat: session, messages, uploads, live websocket, media, widget.

Every request is authenticated by the visitor's token (kept in the browser; only its hash
is stored). Input is validated before anything is written; a customer message is stored with
its Matrix delivery job in one transaction, deduplicated by the widget's client_id.
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
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from sqlalchemy.engine import Connection

from hub.bridges.webchat.channel import KIND, WebchatChannel, message_json
from hub.core.group_commit import GroupCommit, store_each
from hub.core.media import image_type, safe_filename
from hub.core.router import record_inbound, record_inbound_sync
from hub.core.types import InboundMessage, MediaRef, Sender
from hub.db import hot, repo
from hub.db.engine import database_of
from hub.db.models import Message, WebchatVisitor, utcnow

if TYPE_CHECKING:
    from hub.hub import Hub

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[3] / "web"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
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
    """Customer text as it may be stored: a str, valid UTF-8, not blank, not too long."""
    if not isinstance(value, str):
        raise ValueError("text must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    value = value.replace("\r\n", "\n").replace("\x00", "").strip()
    if not value:
        raise ValueError("text is empty")
    if len(value) > limit:
        raise ValueError(f"text is too long ({len(value)} characters, at most {limit})")
    return value


class WebchatApi:
    def __init__(self, hub: Hub, channel: WebchatChannel) -> None:
        self.hub = hub
        self.channel = channel
        self.cfg = hub.config.channels.webchat
        base = hub.config.http.public_base
        self.allowed_origins = {base.split("/", 3)[0] + "//" + base.split("/", 3)[2]}
        self.allowed_origins |= set(self.cfg.allowed_origins)
        self._db = database_of(hub.sessions)
        # Texts sent while a store runs are stored together in the next transaction.
        self._texts: GroupCommit[_TextItem, _Stored] = GroupCommit(
            self._db, store_each(_store_text_item), urgent=True
        )
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
            resp = await handler(request)
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

    async def _visitor(self, token: str | None) -> WebchatVisitor | None:
        if not token or len(token) > 200:
            return None
        async with self.hub.sessions() as s:
            return await repo.visitor_by_token_hash(s, _hash(token))

    async def _visitor_ref(self, token: str | None) -> VisitorRef | None:
        if not token or len(token) > 200:
            return None
        token_hash = _hash(token)
        now = time.monotonic()
        known = self._known.get(token_hash)
        if known is not None and known[0] > now:
            return known[1]
        found = await self._db.read(hot.visitor_by_token_hash, token_hash)
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
                return _error(400, f"name: {exc}")
        token = body.get("token") if isinstance(body.get("token"), str) else None
        visitor = await self._visitor(token)
        async with self.hub.sessions.begin() as s:
            if visitor is None:
                token = secrets.token_urlsafe(32)
                visitor = WebchatVisitor(
                    visitor_id=secrets.token_hex(8),
                    token_hash=_hash(token),
                    name=name,
                    created_at=utcnow(),
                    last_seen_at=utcnow(),
                )
                s.add(visitor)
            else:
                visitor = await s.merge(visitor)
                visitor.last_seen_at = utcnow()
                if name:
                    visitor.name = name
            if name:
                identity = await repo.identity_by_external_id(s, KIND, visitor.visitor_id)
                if identity is not None:
                    identity.display_name = name
        assert token is not None
        self._known.pop(_hash(token), None)
        return web.json_response(
            {
                "token": token,
                "visitor_id": visitor.visitor_id,
                "name": visitor.name,
                "title": self.cfg.title,
                "welcome_text": self.cfg.welcome_text,
                "max_upload_bytes": self.cfg.max_upload_bytes,
            }
        )

    async def _history(self, visitor_id: str, after: int) -> list[dict[str, Any]]:
        async with self.hub.sessions() as s:
            identity = await repo.identity_by_external_id(s, KIND, visitor_id)
            if identity is None:
                return []
            conversation = await repo.conversation_by_identity(s, identity.id)
            if conversation is None:
                return []
            rows = await repo.visible_messages(s, conversation.id, after)
        base = self.hub.config.http.public_base
        return [message_json(m, base) for m in rows]

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
        try:
            text = _clean_text(body.get("text"), self.cfg.max_text_chars)
        except ValueError as exc:
            return _error(400, str(exc))
        inbound = InboundMessage(
            remote_id=f"{visitor.visitor_id}:{client_id}", kind="text", text=text
        )
        return await self._store(visitor, inbound)

    async def upload(self, request: web.Request) -> web.Response:
        visitor = await self._auth(request)
        cap = self.cfg.max_upload_bytes
        if request.content_length and request.content_length > cap + 64 * 1024:
            return _error(413, f"file too large (at most {cap} bytes)", max_bytes=cap)
        try:
            reader = await request.multipart()
        except (ValueError, AssertionError):
            return _error(400, "expected a multipart/form-data upload")
        client_id, caption, data, filename, ctype = None, None, None, None, None
        while (part := await reader.next()) is not None:
            if not hasattr(part, "name"):
                continue
            if part.name == "file":
                filename, ctype = part.filename, part.headers.get("Content-Type")  # type: ignore[union-attr]
                chunks, size = [], 0
                while chunk := await part.read_chunk(65536):  # type: ignore[union-attr]
                    size += len(chunk)
                    if size > cap:
                        log.info("webchat: upload over %d bytes refused", cap)
                        return _error(413, f"file too large (at most {cap} bytes)", max_bytes=cap)
                    chunks.append(chunk)
                data = b"".join(chunks)
            elif part.name in ("client_id", "caption"):
                value = (await part.read(decode=True))[:8192].decode("utf-8", "replace")  # type: ignore[union-attr]
                if part.name == "client_id":
                    client_id = value
                else:
                    caption = value.strip() or None
        if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
            return _error(400, "client_id must be 8–64 characters of A–Z, a–z, 0–9, - or _")
        if not data:
            return _error(400, "the file is missing or empty")
        proven = image_type(data)
        mimetype = (
            proven
            or (ctype if ctype and "/" in ctype and not ctype.startswith("image/") else None)
            or "application/octet-stream"
        )
        name = safe_filename(filename, mimetype)
        return await self._store(
            visitor,
            InboundMessage(
                remote_id=f"{visitor.visitor_id}:{client_id}",
                kind="image" if proven else "file",
                text=caption,
                media=MediaRef(name, mimetype, len(data)),
            ),
            data,
        )

    async def _store(
        self, visitor: VisitorRef, inbound: InboundMessage, data: bytes | None = None
    ) -> web.Response:
        hub = self.hub
        if data is None:
            async with hub.worker.handover(self._db) as offer:
                stored = await self._texts.submit(
                    (visitor.visitor_id, inbound, hub.config.appservice.ghost_prefix, offer)
                )
        else:
            stored = await self._store_media(visitor, inbound, data)
            if stored is not None and stored[1] == 201:
                hub.worker.wake()
        if stored is None:  # the visitor is gone since the token was checked
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "unknown or missing session token"}),
                content_type="application/json",
            )
        message, status = stored
        payload = message_json(message, hub.config.http.public_base)
        if status == 201:
            await self.channel.push(visitor.visitor_id, payload)
        return web.json_response({"message": payload}, status=status)

    async def _store_media(
        self, visitor: VisitorRef, inbound: InboundMessage, data: bytes
    ) -> tuple[Message, int] | None:
        hub = self.hub
        async with hub.sessions.begin() as s:
            existing = await repo.message_by_remote_id(s, KIND, inbound.remote_id)
            if existing is not None:
                return existing, 200
            row = await s.get(WebchatVisitor, visitor.visitor_id)
            if row is None:
                return None
            if inbound.media is not None:
                identity = await repo.get_or_create_identity(
                    s,
                    KIND,
                    row.visitor_id,
                    row.name,
                    repo.opaque_localpart(hub.config.appservice.ghost_prefix, "web"),
                )
                conv = await repo.get_or_create_conversation(s, identity.id)
                saved = await hub.media.save(
                    s, data, inbound.media.filename, inbound.media.mimetype, conv.id
                )
                inbound = InboundMessage(
                    inbound.remote_id,
                    inbound.kind,
                    inbound.text,
                    MediaRef(saved.filename, saved.mimetype, saved.size, saved.id),
                )
            message = await record_inbound(
                s,
                Sender(KIND, row.visitor_id, row.name),
                inbound,
                ghost_prefix=hub.config.appservice.ghost_prefix,
                channel_code="web",
            )
            assert message is not None
            return message, 201

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=25, max_msg_size=4096)
        await ws.prepare(request)
        visitor: WebchatVisitor | None = None
        try:
            first = await ws.receive(timeout=_WS_AUTH_TIMEOUT)
            auth = json.loads(first.data) if first.type == WSMsgType.TEXT else None
            if isinstance(auth, dict) and auth.get("type") == "auth":
                visitor = await self._visitor(auth.get("token"))
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
        async with self.hub.sessions.begin() as s:
            identity = await repo.identity_by_external_id(s, KIND, visitor_id)
            conversation = identity and await repo.conversation_by_identity(s, identity.id)
            if conversation is None:
                return
            changed = await self.hub.receipts.customer_read(s, conversation.id, up_to)
        if changed:
            self.hub.worker.wake()

    async def media(self, request: web.Request) -> web.StreamResponse:
        media_id = request.match_info["media_id"]
        if not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", media_id):
            raise web.HTTPNotFound()
        async with self.hub.sessions() as s:
            row = await repo.media_by_id(s, media_id)
        path = self.hub.media.path(media_id)
        if row is None or not path.exists():
            raise web.HTTPNotFound()
        inline = row.mimetype in ("image/png", "image/jpeg", "image/gif", "image/webp")
        disposition = "inline" if inline else "attachment"
        ascii_name = row.filename.encode("ascii", "replace").decode().replace("?", "_")
        from urllib.parse import quote

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


_Stored = tuple[Message, int] | None
_TextItem = tuple[str, InboundMessage, str, "hot.LeaseOffer | None"]


def _store_text_item(conn: Connection, item: _TextItem) -> _Stored:
    return _store_text(conn, *item)


def _store_text(
    conn: Connection,
    visitor_id: str,
    inbound: InboundMessage,
    ghost_prefix: str,
    offer: hot.LeaseOffer | None = None,
) -> tuple[Message, int] | None:
    """One transaction: a visitor's text message with its delivery job (201), or the one
    stored before under the same client_id (200); None if the visitor no longer exists."""
    exists, name = hot.visitor_name(conn, visitor_id)
    if not exists:
        return None
    existing = hot.message_by_remote(conn, KIND, inbound.remote_id)
    if existing is not None:
        return existing, 200
    message = record_inbound_sync(
        conn,
        Sender(KIND, visitor_id, name),
        inbound,
        ghost_prefix=ghost_prefix,
        channel_code="web",
        offer=offer,
    )
    if message is None:  # another process stored it just now
        existing = hot.message_by_remote(conn, KIND, inbound.remote_id)
        assert existing is not None
        return existing, 200
    return message, 201


__all__ = ["Message", "WebchatApi"]
