"""HTTP surface of the web chat: session, messages, uploads, live websocket, media, widget.

Every request is authenticated by the visitor's token (kept in the browser; only its hash
is stored). Input is validated before anything is written; a customer's message, text or
file, goes the one way in (hub.core.ingest) like every channel's: stored with its Matrix
delivery job in one transaction, deduplicated by the widget's client_id.

A tapped reply button is a message POST with `button_id` (the button's id, as the
message's `buttons` gave it): it must be a button of a message the shop sent to this
visitor, and is stored as an "interactive" message like the other channels' taps.

The API is anonymous, so it is rate-limited (hub.bridges.webchat.limits, the numbers in
`channels.webchat.limits`): a new visitor's session per client address, a known visitor's
per visitor, messages and uploads per visitor and per address, and a visitor's first message
(a new conversation: a ghost, a room, an invitation for every adviser) against the shop's
cap. Over a limit: 429 with Retry-After (and `retry_after` in the JSON), counted in
`channel.limits.refused`, logged at most once a minute per limit, and nothing stored: every
check comes before the first write. The client's address is the peer's, or behind a trusted
reverse proxy (`http.trusted_proxies`) the one X-Forwarded-For gives (hub.core.addresses).

Whatever a body holds (any JSON, nested to any depth, invalid UTF-8, lone surrogates, wrong
types, huge strings, a broken multipart form, odd websocket frames), the answer is a 4xx
JSON error in the one shape `{"error": ...}` and a log line, never a 5xx, and nothing is
half-written: a file written for an upload that is then not stored is deleted again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, WSCloseCode, WSMessage, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from babel.numbers import format_decimal

from hub.bridges.webchat.channel import KIND, WebchatChannel, message_json
from hub.bridges.webchat.limits import LogThrottle, Refused
from hub.bridges.webchat.texts import widget_texts
from hub.core.addresses import client_address
from hub.core.media import image_type, safe_filename
from hub.core.types import Envelope, InboundMessage, MediaRef, MessageKind, Sender
from hub.db import conversations, media, receipts, webchat
from hub.db.models import Message
from hub.http.pages import page_language
from hub.i18n import _, current_locale

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[3] / "web"
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_AFTER = re.compile(r"-?[0-9]{1,18}")
# A part's declared type, kept for a file that is not an image (never trusted for images).
_MIMETYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_MAX_BUTTON_ID = 256  # WhatsApp's limit for a reply button's id
_MAX_NAME = 80
_MAX_TOKEN = 200
_MAX_ID = 2**63 - 1  # a message id as both databases store it
_WS_AUTH_TIMEOUT = 10.0
# A multipart upload: the file, a few small fields and the form's own bytes.
_FORM_OVERHEAD = 64 * 1024
_FORM_PARTS = 8
_CHUNK = 64 * 1024
# Token hash -> visitor, remembered briefly so a message costs no extra transaction for
# authentication. The id behind a token never changes; the name is read when storing.
_AUTH_TTL = 60.0
_AUTH_CACHE_MAX = 10_000


@dataclass(frozen=True)
class VisitorRef:
    """An authenticated visitor (the name as of authentication: for display only)."""

    visitor_id: str
    name: str | None
    token_hash: str = ""
    # Their conversation existed (as of authentication, or since they wrote here).
    has_conversation: bool = False


class _BadForm(Exception):
    """An upload's multipart body this API cannot take (the reason is for a broken client;
    `kind` names the kind of fault, for the log)."""

    def __init__(self, reason: str, kind: str = "form") -> None:
        super().__init__(reason)
        self.kind = kind


class _FormTooLarge(Exception):
    pass


@dataclass
class _Form:
    client_id: bytes | None = None
    caption: bytes | None = None
    data: bytes | None = None
    filename: str | None = None
    ctype: str | None = None


def _error(status: int, text: str, **extra: Any) -> web.Response:
    return web.json_response({"error": text, **extra}, status=status)


def _raise(exc: type[web.HTTPException], text: str, **extra: Any) -> web.HTTPException:
    """An HTTP error to raise, with the API's JSON body."""
    body = json.dumps({"error": text, **extra})
    if exc is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(
            extra["max_bytes"], text=body, content_type="application/json"
        )
    return exc(text=body, content_type="application/json")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token(value: object) -> str | None:
    """A token as the hub hands them out could be: short printable ASCII (anything else,
    invalid UTF-8 or a lone surrogate included, is no token of ours)."""
    if isinstance(value, str) and 0 < len(value) <= _MAX_TOKEN and value.isascii():
        return value
    return None


def _unicode(value: str) -> bool:
    """False for a str no database stores: a lone surrogate (JSON's "\\ud83d")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _message_id(value: object) -> int | None:
    """A message id from a websocket frame: a whole number a database can hold (not a bool,
    not a float, not a 400-digit number)."""
    return value if type(value) is int and 0 <= value <= _MAX_ID else None


def _clean_text(value: object, limit: int) -> str:
    """Customer text as it may be stored: a str, valid UTF-8, not blank, not too long. The
    reasons are the customer's to read (the widget shows them); errors only a broken client
    makes (JSON, client_id, token) stay English."""
    if not isinstance(value, str):
        raise ValueError(_("The text must be a string."))
    if not _unicode(value):
        raise ValueError(_("The text is not valid Unicode (lone surrogate)."))
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


def _frame(msg: WSMessage) -> dict[str, Any] | None:
    """A websocket text frame's JSON object; None for anything else."""
    if msg.type != WSMsgType.TEXT or not isinstance(msg.data, str):
        return None
    try:
        doc = json.loads(msg.data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _part_type(value: str | None) -> str | None:
    """A part's Content-Type as a bare `type/subtype`, or None when it is not one."""
    bare = (value or "").split(";", 1)[0].strip().lower()
    return bare if _MIMETYPE.fullmatch(bare) else None


class WebchatApi:
    def __init__(self, channel: WebchatChannel) -> None:
        self.channel = channel
        self.db = channel.deps.db
        self.store = channel.deps.media
        self.public_base = channel.deps.public_base
        self.cfg = channel.config
        self.limits = channel.limits
        self.clock = channel.clock
        self.proxies = channel.trusted_proxies
        base = self.public_base
        self.allowed_origins = {base.split("/", 3)[0] + "//" + base.split("/", 3)[2]}
        self.allowed_origins |= set(self.cfg.allowed_origins)
        self._known: dict[str, tuple[float, VisitorRef]] = {}
        # Lines about bodies that are not what the widget sends, at most one a minute each.
        self._noted = LogThrottle()

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
        app.on_shutdown.append(self._close_sockets)

    async def _close_sockets(self, _app: web.Application) -> None:
        """At shutdown: aiohttp would wait for every open websocket (up to its shutdown
        timeout, longer than a service manager's stop timeout). Going away tells the
        widgets to reconnect, to this process once it is back or to another one."""
        sockets = [ws for held in self.channel.sockets.values() for ws in held]
        if sockets:
            await asyncio.gather(
                *(ws.close(code=WSCloseCode.GOING_AWAY) for ws in sockets),
                return_exceptions=True,
            )
            log.info("webchat: %d widget connection(s) closed for the shutdown", len(sockets))

    # -- plumbing ------------------------------------------------------------------------

    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            resp: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            if (
                exc.status >= 400
                and request.path.startswith("/webchat/")
                and exc.content_type != "application/json"
            ):
                # aiohttp's own (no such route, a method not allowed, no websocket
                # upgrade): in the API's shape too.
                resp = _error(exc.status, exc.reason.lower())
                if "Allow" in exc.headers:
                    resp.headers["Allow"] = exc.headers["Allow"]
                self._allow_origin(request, resp)
                return resp
            # Raised errors need the header too, or the browser hides a 401/400 from the
            # widget as a network error and it can never recover or show the reason.
            self._allow_origin(request, exc)
            raise
        except Exception:
            if not request.path.startswith("/webchat/"):
                raise
            # A fault of the hub (not of the request: every body is answered with a 4xx
            # above): the widget gets the API's JSON and the header, and retries.
            log.exception("webchat: %s %s failed", request.method, request.path)
            resp = _error(500, "internal error; try again later")
        self._allow_origin(request, resp)
        return resp

    def _allow_origin(self, request: web.Request, resp: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin and request.path.startswith("/webchat/") and origin in self.allowed_origins:
            resp.headers["Access-Control-Allow-Origin"] = origin
            # The widget waits as long as a 429 says (a header the browser hides otherwise).
            resp.headers["Access-Control-Expose-Headers"] = "Retry-After"
            resp.headers["Vary"] = "Origin"

    async def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if origin not in self.allowed_origins:
            self._note("preflight", "webchat: preflight from origin %r refused", origin[:200])
            return web.Response(status=403)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            },
        )

    def _note(self, what: str, message: str, *args: object) -> None:
        """An INFO line about a request refused for its shape; a flood of them is one line
        a minute per kind of fault (a short list: the API's own and the exception types of
        aiohttp's parsers), with the number held back."""
        held = self._noted.due(what, self.clock())
        if held is not None:
            suffix = f" ({held} more since the last line)" if held else ""
            log.info(message + suffix, *args)

    def _address(self, request: web.Request) -> str:
        """The client's address: the peer's, or behind a trusted proxy X-Forwarded-For's."""
        forwarded = ", ".join(request.headers.getall("X-Forwarded-For", ())) or None
        return client_address(request.remote, forwarded, self.proxies)

    def _too_many(self, refused: Refused, who: str) -> web.Response:
        """429: nothing was stored; the client may try again after `retry_after` seconds."""
        held = self.limits.log.due(refused.limit, self.clock())
        if held is not None:
            log.info(
                "webchat: %s over the limit %s, refused for %d s (%d refused so far%s)",
                who,
                refused.limit,
                refused.retry_after,
                self.limits.refused[refused.limit],
                f", {held} since the last line" if held else "",
            )
        resp = _error(
            429,
            f"too many requests; try again in {refused.retry_after} s",
            retry_after=refused.retry_after,
            limit=refused.limit,
        )
        resp.headers["Retry-After"] = str(refused.retry_after)
        return resp

    async def _visitor_ref(self, token: str | None) -> VisitorRef | None:
        if token is None:
            return None
        token_hash = _hash(token)
        now = time.monotonic()
        known = self._known.get(token_hash)
        if known is not None and known[0] > now:
            return known[1]
        found = await self.db.read(webchat.visitor_by_token, token_hash)
        if found is None:
            return None
        if len(self._known) >= _AUTH_CACHE_MAX:
            self._known.clear()
        ref = VisitorRef(found.visitor_id, found.name, token_hash, found.has_conversation)
        self._known[token_hash] = (now + _AUTH_TTL, ref)
        return ref

    def _conversation_opened(self, visitor: VisitorRef) -> None:
        """The visitor's first message was stored: the next one opens nothing."""
        known = self._known.get(visitor.token_hash)
        if known is not None and not known[1].has_conversation:
            self._known[visitor.token_hash] = (known[0], replace(known[1], has_conversation=True))

    async def _auth(self, request: web.Request) -> VisitorRef:
        header = request.headers.get("Authorization", "")
        token = _token(header[7:]) if header.startswith("Bearer ") else None
        visitor = await self._visitor_ref(token)
        if visitor is None:
            self._note(
                "token", "webchat: request with unknown token from %s", self._address(request)
            )
            raise _raise(web.HTTPUnauthorized, "unknown or missing session token")
        return visitor

    async def _json(self, request: web.Request) -> dict[str, Any]:
        """The body as a JSON object (UTF-8, as JSON is); any other body is a 4xx."""
        address = self._address(request)
        try:
            raw = await request.read()  # up to the application's client_max_size
        except web.HTTPRequestEntityTooLarge:
            self._note("large", "webchat: body over the size limit from %s", address)
            cap = request.client_max_size
            raise _raise(web.HTTPRequestEntityTooLarge, "body too large", max_bytes=cap) from None
        except (HttpProcessingError, ConnectionError, EOFError) as exc:
            self._note("unread", "webchat: body unreadable from %s (%s)", address, exc)
            raise _raise(web.HTTPBadRequest, "body could not be read") from None
        try:
            body = json.loads(raw.decode("utf-8"))
        except RecursionError:
            self._note("nested", "webchat: JSON nested too deeply from %s", address)
            raise _raise(web.HTTPBadRequest, "body is not valid JSON (nested too deeply)") from None
        except ValueError:  # invalid UTF-8 included
            self._note("json", "webchat: malformed JSON from %s", address)
            raise _raise(web.HTTPBadRequest, "body is not valid JSON") from None
        if not isinstance(body, dict):
            self._note("object", "webchat: JSON that is not an object from %s", address)
            raise _raise(web.HTTPBadRequest, "body must be a JSON object")
        return body

    async def _may_open(self, visitor: VisitorRef) -> web.Response | None:
        """429 when this message would open a new conversation over the shop's cap."""
        if visitor.has_conversation:
            return None
        refused = self.limits.new_conversation(self.clock())
        if refused is None:
            return None
        return self._too_many(refused, f"visitor {visitor.visitor_id}'s first message")

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
        token = _token(body.get("token"))
        # A known visitor's session is counted per visitor, a new one per client address;
        # both before anything is written.
        known = await self._visitor_ref(token)
        address = self._address(request)
        if known is not None:
            refused = self.limits.known_session(known.visitor_id, self.clock())
            who = f"visitor {known.visitor_id}"
        else:
            refused = self.limits.new_session(address, self.clock())
            who = f"new visitors from {address}"
        if refused is not None:
            return self._too_many(refused, who)
        new_token = secrets.token_urlsafe(32)
        known_hash = _hash(token) if token is not None else None
        visitor, created = await self.db.write(
            webchat.open_session, known_hash, _hash(new_token), name
        )
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
        after = request.query.get("after", "0")
        if not _AFTER.fullmatch(after):
            return _error(400, "after must be a message id (a whole number)")
        return web.json_response(
            {"messages": await self._history(visitor.visitor_id, max(0, int(after)))}
        )

    async def post_message(self, request: web.Request) -> web.Response:
        visitor = await self._auth(request)
        address = self._address(request)
        refused = self.limits.message(address, visitor.visitor_id, self.clock())
        if refused is not None:
            return self._too_many(refused, f"visitor {visitor.visitor_id} at {address}")
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
        if (too_many := await self._may_open(visitor)) is not None:
            return too_many
        response, _created = await self._store(
            visitor, InboundMessage(remote_id, "text", text=text)
        )
        return response

    async def _tap(self, visitor: VisitorRef, remote_id: str, button_id: object) -> web.Response:
        """A reply button tapped: stored as the other channels store a tap, with the title
        the shop gave the button (the widget's `text` is only its echo) and as an answer to
        the message that carried it."""
        if (
            not isinstance(button_id, str)
            or not 0 < len(button_id) <= _MAX_BUTTON_ID
            or not _unicode(button_id)
        ):
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
        if (too_many := await self._may_open(visitor)) is not None:
            return too_many
        inbound = InboundMessage(
            remote_id,
            "interactive",
            text=button.title,
            reply_to_remote_id=button.remote_id,
            data={"id": button_id, "title": button.title},
        )
        response, _created = await self._store(visitor, inbound)
        return response

    async def upload(self, request: web.Request) -> web.Response:
        visitor = await self._auth(request)
        address = self._address(request)
        refused = self.limits.upload(address, visitor.visitor_id, self.clock())
        if refused is not None:
            return self._too_many(refused, f"visitor {visitor.visitor_id} at {address}")
        cap = self.cfg.max_upload_bytes
        if request.content_length and request.content_length > cap + _FORM_OVERHEAD:
            return _too_large(cap)
        try:
            form = await self._read_form(request, cap)
        except _FormTooLarge:
            log.info("webchat: upload over %d bytes refused", cap)
            return _too_large(cap)
        except _BadForm as exc:
            self._note(f"form:{exc.kind}", "webchat: malformed upload from %s: %s", address, exc)
            return _error(400, f"expected a multipart/form-data upload ({exc})")
        client_id = (form.client_id or b"").decode("utf-8", "replace")
        if not _CLIENT_ID.fullmatch(client_id):
            return _error(400, "client_id must be 8–64 characters of A–Z, a–z, 0–9, - or _")
        caption = None
        if form.caption is not None and form.caption.strip():
            try:
                text = form.caption.decode("utf-8", "replace")
                caption = _clean_text(text, self.cfg.max_text_chars)
            except ValueError as exc:
                return _error(400, str(exc))
        data = form.data
        if not data:
            return _error(400, _("The file is missing or empty."))
        if (too_many := await self._may_open(visitor)) is not None:
            return too_many
        proven = image_type(data)
        ctype = form.ctype
        mimetype = (
            proven
            or (ctype if ctype and not ctype.startswith("image/") else None)
            or "application/octet-stream"
        )
        stored = await self.store.write(data, safe_filename(form.filename, mimetype), mimetype)
        ref = MediaRef(
            stored.filename, mimetype, stored.size, stored.media_id, sha256=stored.sha256
        )
        kind: MessageKind = "image" if proven else "file"
        inbound = InboundMessage(f"{visitor.visitor_id}:{client_id}", kind, caption, ref)
        created = False
        try:
            response, created = await self._store(visitor, inbound)
        finally:
            if not created:
                # Not stored (sent before under this client_id, or the store failed): no row
                # will ever name this file.
                await self.store.delete(stored.media_id)
        return response

    async def _read_form(self, request: web.Request, cap: int) -> _Form:
        """The upload's fields, every part read in bounded chunks: the file up to `cap`
        bytes, the small fields up to what they may hold, the whole body up to the cap and
        the form's overhead (a chunked body announces no length). aiohttp's multipart reader
        raises many kinds of errors on a malformed body; they are all `_BadForm` here."""
        budget = cap + _FORM_OVERHEAD
        small = self.cfg.max_text_chars * 4 + 64  # UTF-8: at most 4 bytes a character
        form = _Form()
        try:
            reader = await request.multipart()
            parts = 0
            while (part := await reader.next()) is not None:
                parts += 1
                if parts > _FORM_PARTS:
                    raise _BadForm("too many parts")
                if not isinstance(part, BodyPartReader):
                    raise _BadForm("a nested multipart")
                name = part.name
                keep = name in ("file", "client_id", "caption")
                limit = cap if name == "file" else small
                chunks: list[bytes] = []
                size = 0
                while chunk := await part.read_chunk(_CHUNK):
                    size += len(chunk)
                    budget -= len(chunk)
                    if budget < 0 or (name == "file" and size > cap):
                        raise _FormTooLarge()
                    if size > limit:
                        raise _BadForm(f"the field {name!r} is too long")
                    if keep:
                        chunks.append(chunk)
                if not keep:
                    continue
                value = b"".join(chunks)
                if name == "file":
                    if form.data is not None:
                        raise _BadForm("more than one file")
                    form.data = value
                    form.filename = part.filename
                    form.ctype = _part_type(part.headers.get("Content-Type"))
                elif name == "client_id":
                    form.client_id = value
                else:
                    form.caption = value
        except web.HTTPRequestEntityTooLarge:
            raise _FormTooLarge() from None
        except (
            ValueError,  # no boundary, a broken boundary or header, undecodable bytes
            LookupError,  # an unknown charset or a header the reader needs missing
            TypeError,
            AssertionError,
            RuntimeError,  # an unknown encoding
            HttpProcessingError,  # LineTooLong, too many headers
            EOFError,  # the body ended inside the form
            ConnectionError,
        ) as exc:
            kind = type(exc).__name__
            raise _BadForm(f"{kind}: {str(exc)[:120]}", kind) from None
        return form

    async def _store(
        self, visitor: VisitorRef, inbound: InboundMessage
    ) -> tuple[web.Response, bool]:
        """A visitor's message through the one way in; the one stored before under the same
        client_id answers 200 instead of 201. True when it was stored now."""
        sender = Sender(KIND, visitor.visitor_id, visitor.name)
        result = await self.channel.ingest(self.channel, [Envelope(sender, inbound)])
        status = 201
        if result.messages:
            message: Message | None = result.messages[0]
            self._conversation_opened(visitor)
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
        return web.json_response({"message": payload}, status=status), status == 201

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=25, max_msg_size=4096)
        await ws.prepare(request)
        visitor: VisitorRef | None = None
        try:
            auth = _frame(await ws.receive(timeout=_WS_AUTH_TIMEOUT))
            if auth is not None and auth.get("type") == "auth":
                visitor = await self._visitor_ref(_token(auth.get("token")))
            if auth is None or visitor is None:
                self._note(
                    "ws",
                    "webchat: websocket without a known token from %s",
                    self._address(request),
                )
                await ws.send_json({"type": "error", "error": "unknown or missing session token"})
                await ws.close()
                return ws
            after = _message_id(auth.get("after")) or 0
            # Register before reading the backlog so nothing falls between the two.
            self.channel.sockets[visitor.visitor_id].add(ws)
            await ws.send_json({"type": "ready"})
            for message in await self._history(visitor.visitor_id, after):
                await ws.send_json({"type": "message", "message": message})
            last_read = 0
            async for msg in ws:
                doc = _frame(msg)
                kind = doc.get("type") if doc is not None else None
                if kind == "ping":
                    await ws.send_json({"type": "pong"})
                elif kind == "read" and doc is not None:
                    up_to = _message_id(doc.get("up_to"))
                    if up_to is None or up_to <= last_read:
                        continue
                    # Each read that moves on is a write: as many as messages, no more
                    # (one dropped only delays "read" to the next, which covers it).
                    if self.limits.read(visitor.visitor_id, self.clock()) is not None:
                        continue
                    last_read = up_to
                    await self._customer_read(visitor.visitor_id, last_read)
        except (TimeoutError, asyncio.CancelledError, ConnectionError):
            pass
        except Exception:
            # A fault of the hub (a database error): the upgrade is long answered, so the
            # socket is closed and the widget reconnects and catches up.
            log.exception("webchat: websocket of visitor %s failed", visitor and visitor.visitor_id)
            await ws.close(code=WSCloseCode.INTERNAL_ERROR)
        finally:
            if visitor is not None:
                self.channel.forget_socket(visitor.visitor_id, ws)
        return ws

    async def _customer_read(self, visitor_id: str, up_to: int) -> None:
        await self.db.write(receipts.customer_read, KIND, visitor_id, up_to, self.channel.domain)

    async def media(self, request: web.Request) -> web.StreamResponse:
        media_id = request.match_info["media_id"]
        if not _MEDIA_ID.fullmatch(media_id):
            raise _raise(web.HTTPNotFound, "no such file")
        row = await self.db.read(media.media_by_id, media_id)
        path = self.store.path(media_id)
        if row is None or not path.exists():
            raise _raise(web.HTTPNotFound, "no such file")
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
