"""A loopback stand-in of Meta's Graph API for Messenger and Instagram messaging, and of
Meta's side of the webhooks.

API (what the hub calls): the Send API (`POST /{version}/me/messages` or
`/{version}/{page-id}/messages`), the Attachment Upload API
(`POST /{version}/{page-id}/message_attachments`, multipart `message` + `filedata`, and
`platform=instagram` for Instagram), the User Profile API (`GET /{version}/{user-id}`) and
signed-URL media downloads (`GET /cdn/...`, no token, like Meta's CDN). The page access
token is checked (Authorization: Bearer, or access_token), every request is recorded, the
24-hour / 7-day HUMAN_AGENT window is enforced for customers whose messages it delivered,
and the next N calls can be made to fail with documented Graph API errors.

Webhooks (what Meta sends): builders for messaging events and batches, and `post_webhook`,
which signs the exact raw bytes with X-Hub-Signature-256 as Meta does (JSON with non-ASCII
characters escaped as \\uXXXX, as Meta sends it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.standins.loopback import serve_on_loopback

API_VERSION = "v21.0"
DAY_MS = 24 * 3600 * 1000


@dataclass
class Failure:
    """A documented Graph API error answer."""

    status: int
    code: int
    message: str
    subcode: int | None = None
    type: str = "OAuthException"
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "code": self.code,
            "fbtrace_id": "A" + secrets.token_hex(5),
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        return {"error": error}


def rate_limited(retry_after: str | None = None) -> Failure:
    headers = {"Retry-After": retry_after} if retry_after else {}
    message = "(#613) Calls to this api have exceeded the rate limit."
    return Failure(429, 613, message, headers=headers)


def window_closed(kind: str) -> Failure:
    subcode = 2018278 if kind == "messenger" else 2534022
    return Failure(400, 10, "(#10) This message is sent outside of allowed window.", subcode)


PERSON_UNAVAILABLE = Failure(400, 551, "This person isn't available right now.", 1545041)
TOKEN_INVALID = Failure(400, 190, "Invalid OAuth access token.")
TEMPORARY = Failure(500, 2, "An unexpected error has occurred. Please retry your request later.")
UNSUPPORTED_POST = Failure(
    400, 100, "(#100) Unsupported post request.", type="GraphMethodException"
)
UNSUPPORTED_GET = Failure(400, 100, "(#100) Unsupported get request.", type="GraphMethodException")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, Any] | None = None


class MetaStandin:
    def __init__(self, kind: str = "messenger") -> None:
        assert kind in ("messenger", "instagram"), kind
        self.kind = kind
        self.object = "page" if kind == "messenger" else "instagram"
        self.page_id = f"1{secrets.randbelow(10**14):014d}"
        # Instagram webhooks name the Instagram professional account, not the page.
        self.account_id = self.page_id if kind == "messenger" else "1784" + self.page_id[:13]
        self.page_access_token = "EAAG" + secrets.token_urlsafe(32)
        self.app_secret = secrets.token_hex(16)
        self.verify_token = secrets.token_hex(12)
        self.requests: list[Recorded] = []
        self.sent: list[dict[str, Any]] = []  # accepted Send API bodies, with "message_id"
        self.actions: list[dict[str, Any]] = []  # accepted sender actions (react, unreact...)
        self.uploads: dict[str, dict[str, Any]] = {}
        self.profiles: dict[str, dict[str, str]] = {}
        self.last_inbound_ms: dict[str, int] = {}  # customer id -> newest delivered message
        self._files: dict[str, tuple[bytes, str]] = {}
        self._failures: list[tuple[str, Failure]] = []
        self._delays: list[float] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{version}/{node}/messages", self._messages)
        app.router.add_post("/{version}/{node}/message_attachments", self._upload)
        app.router.add_get("/cdn/{token}/{name}", self._cdn)
        app.router.add_get("/{version}/{node}", self._profile)
        self._runner, self.base_url = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def hub_config(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "api_base_url": self.base_url,
            "api_version": API_VERSION,
            "page_id": self.page_id,
            "page_access_token": self.page_access_token,
            "app_secret": self.app_secret,
            "verify_token": self.verify_token,
            "human_agent_tag": False,
            "request_timeout_seconds": 5,
        }

    # --- test controls -----------------------------------------------------------------

    def fail_next(self, n: int, failure: Failure, endpoint: str = "messages") -> None:
        """The next n calls to `endpoint` ("messages", "attachments", "cdn", "profile", "any")
        answer with `failure`."""
        self._failures += [(endpoint, failure)] * n

    def delay_next(self, seconds: float, n: int = 1) -> None:
        self._delays += [seconds] * n

    def add_file(self, data: bytes, mimetype: str, name: str) -> str:
        """Serve a file like Meta's CDN does; the (signed-looking) URL of it."""
        token = secrets.token_hex(8)
        self._files[f"{token}/{name}"] = (data, mimetype)
        return f"{self.base_url}/cdn/{token}/{name}?_nc_cat=1&oh={secrets.token_hex(8)}&oe=0"

    def sent_to(self, customer_id: str) -> list[dict[str, Any]]:
        return [s for s in self.sent if s.get("recipient", {}).get("id") == customer_id]

    def message_calls(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/messages")]

    # --- the API -------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Recorded:
        rec = Recorded(request.method, request.path, dict(request.query), dict(request.headers))
        ctype = request.content_type
        if ctype == "application/json":
            rec.json = await request.json()
        elif ctype.startswith("multipart/"):
            rec.form = {}
            async for part in await request.multipart():
                if part.filename:  # type: ignore[union-attr]
                    data = await part.read()  # type: ignore[union-attr]
                    ctype_part = part.headers.get("Content-Type", "")
                    rec.form[part.name] = (part.filename, ctype_part, bytes(data))  # type: ignore[union-attr]
                else:
                    rec.form[part.name] = await part.text()  # type: ignore[union-attr]
        elif ctype == "application/x-www-form-urlencoded":
            rec.form = dict(await request.post())  # type: ignore[arg-type]
        self.requests.append(rec)
        return rec

    async def _gate(
        self, request: web.Request, rec: Recorded, endpoint: str
    ) -> web.Response | None:
        """Delays, token check and scheduled failures shared by every endpoint."""
        if self._delays:
            await asyncio.sleep(self._delays.pop(0))
        if endpoint != "cdn":
            auth = request.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ").removeprefix("OAuth ") if auth else None
            token = token or rec.query.get("access_token") or (rec.form or {}).get("access_token")
            if token != self.page_access_token:
                return _error(TOKEN_INVALID)
        for i, (where, failure) in enumerate(self._failures):
            if where in (endpoint, "any"):
                del self._failures[i]
                return _error(failure)
        return None

    def _node_ok(self, node: str) -> bool:
        return node in ("me", self.page_id)

    async def _messages(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (refused := await self._gate(request, rec, "messages")) is not None:
            return refused
        if not self._node_ok(request.match_info["node"]):
            return _error(UNSUPPORTED_POST)
        body = rec.json if isinstance(rec.json, dict) else _form_json(rec.form or {})
        if "sender_action" in body:
            return self._sender_action(body)
        problem = self._check_send(body)
        if problem is not None:
            return _error(problem)
        mid = "m_" + secrets.token_urlsafe(30)
        self.sent.append({**body, "message_id": mid})
        return web.json_response({"recipient_id": body["recipient"]["id"], "message_id": mid})

    def _sender_action(self, body: dict[str, Any]) -> web.Response:
        """typing_on/off, mark_seen, react and unreact: no message, no messaging_type; the
        answer names the recipient only. `react` needs payload.message_id and a reaction,
        `unreact` the message id alone."""

        def invalid(text: str) -> web.Response:
            return _error(Failure(400, 100, f"(#100) {text}"))

        recipient = body.get("recipient") if isinstance(body.get("recipient"), dict) else {}
        if not recipient.get("id"):
            return invalid("The parameter recipient is required")
        action = body.get("sender_action")
        if action not in ("typing_on", "typing_off", "mark_seen", "react", "unreact"):
            return invalid(
                "param sender_action must be one of "
                "{typing_on, typing_off, mark_seen, react, unreact}"
            )
        if "message" in body:
            return invalid("sender_action cannot be sent with message")
        payload = body.get("payload") if isinstance(body.get("payload"), dict) else {}
        if action in ("react", "unreact"):
            if not payload.get("message_id"):
                return invalid("param payload[message_id] is required")
            if action == "react" and not payload.get("reaction"):
                return invalid("param payload[reaction] is required")
            if action == "unreact" and "reaction" in payload:
                return invalid("param payload[reaction] must be omitted to unreact")
        self.actions.append(body)
        return web.json_response({"recipient_id": recipient["id"]})

    def _check_send(self, body: dict[str, Any]) -> Failure | None:
        def invalid(text: str) -> Failure:
            return Failure(400, 100, f"(#100) {text}")

        recipient = body.get("recipient") if isinstance(body.get("recipient"), dict) else {}
        if not recipient.get("id"):
            return invalid("The parameter recipient is required")
        mtype = body.get("messaging_type")
        if mtype not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
            return invalid("param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}")
        if mtype == "MESSAGE_TAG" and body.get("tag") != "HUMAN_AGENT":
            return invalid("a valid tag is required for messaging_type MESSAGE_TAG")
        message = body.get("message") if isinstance(body.get("message"), dict) else {}
        text, attachment = message.get("text"), message.get("attachment")
        if not text and not isinstance(attachment, dict):
            return invalid("param message must be non-empty")
        if isinstance(text, str):
            too_long = len(text) > 2000 if self.kind == "messenger" else len(text.encode()) > 1000
            if too_long:
                return invalid("Length of param message[text] exceeds the limit")
        if isinstance(attachment, dict):
            payload = attachment.get("payload") or {}
            if payload.get("attachment_id") not in self.uploads and not payload.get("url"):
                return invalid("Invalid attachment_id")
        if len(message.get("quick_replies") or []) > 13:
            return invalid("param message[quick_replies] must have at most 13 elements")
        last = self.last_inbound_ms.get(str(recipient["id"]))
        if last is not None:
            age = time.time() * 1000 - last
            tagged = mtype == "MESSAGE_TAG" and age <= 7 * DAY_MS
            if age > DAY_MS and not tagged:
                return window_closed(self.kind)
        return None

    async def _upload(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (refused := await self._gate(request, rec, "attachments")) is not None:
            return refused
        form = rec.form or {}
        filedata = form.get("filedata")
        try:
            message = json.loads(form.get("message", ""))
            kind = message["attachment"]["type"]
        except (ValueError, KeyError, TypeError):
            return _error(Failure(400, 100, "(#100) param message must be a valid attachment"))
        if not isinstance(filedata, tuple):
            return _error(Failure(400, 100, "(#100) Upload attachment failure: filedata missing"))
        if self.kind == "instagram" and form.get("platform") != "instagram":
            return _error(Failure(400, 100, "(#100) platform must be instagram for this page"))
        attachment_id = str(secrets.randbelow(10**16))
        filename, mimetype, data = filedata
        self.uploads[attachment_id] = {
            "type": kind,
            "filename": filename,
            "mimetype": mimetype,
            "data": data,
        }
        return web.json_response({"attachment_id": attachment_id})

    async def _profile(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (refused := await self._gate(request, rec, "profile")) is not None:
            return refused
        profile = self.profiles.get(request.match_info["node"])
        if profile is None:
            return _error(UNSUPPORTED_GET)
        wanted = rec.query.get("fields", "").split(",")
        return web.json_response(
            {"id": request.match_info["node"], **{k: v for k, v in profile.items() if k in wanted}}
        )

    async def _cdn(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (refused := await self._gate(request, rec, "cdn")) is not None:
            return refused
        key = f"{request.match_info['token']}/{request.match_info['name']}"
        if key not in self._files:
            return web.Response(status=404, text="URL signature expired")
        data, mimetype = self._files[key]
        return web.Response(body=data, content_type=mimetype)

    # --- webhooks ------------------------------------------------------------------------

    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)

    def _event(self, customer: str, timestamp: int | None, **content: Any) -> dict[str, Any]:
        return {
            "sender": {"id": customer},
            "recipient": {"id": self.account_id},
            "timestamp": timestamp if timestamp is not None else self.now_ms(),
            **content,
        }

    @staticmethod
    def new_mid() -> str:
        return "m_" + secrets.token_urlsafe(30)

    def text_event(
        self,
        customer: str,
        text: str,
        *,
        mid: str | None = None,
        timestamp: int | None = None,
        reply_to: str | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"mid": mid or self.new_mid(), "text": text}
        if reply_to:
            message["reply_to"] = {"mid": reply_to}
        return self._event(customer, timestamp, message=message)

    def attachment_event(
        self, customer: str, kind: str, url: str, *, mid: str | None = None
    ) -> dict[str, Any]:
        attachment = {"type": kind, "payload": {"url": url}}
        message = {"mid": mid or self.new_mid(), "attachments": [attachment]}
        return self._event(customer, None, message=message)

    def echo_event(self, customer: str, text: str, *, mid: str | None = None) -> dict[str, Any]:
        """Our own send coming back (message_echoes; for Instagram inside `messages`)."""
        return {
            "sender": {"id": self.account_id},
            "recipient": {"id": customer},
            "timestamp": self.now_ms(),
            "message": {
                "is_echo": True,
                "app_id": 1517776481860111,
                "mid": mid or self.new_mid(),
                "text": text,
            },
        }

    def reaction_event(
        self, customer: str, target_mid: str, emoji: str = "❤️", action: str = "react"
    ) -> dict[str, Any]:
        reaction = {"reaction": "love", "emoji": emoji, "action": action, "mid": target_mid}
        if action == "unreact":
            reaction = {"action": action, "mid": target_mid}
        return self._event(customer, None, reaction=reaction)

    def story_mention_event(self, customer: str, story_url: str) -> dict[str, Any]:
        attachment = {"type": "story_mention", "payload": {"url": story_url}}
        return self._event(
            customer, None, message={"mid": self.new_mid(), "attachments": [attachment]}
        )

    def story_reply_event(
        self, customer: str, text: str, story_url: str, story_id: str = "17890001112223334"
    ) -> dict[str, Any]:
        message = {
            "mid": self.new_mid(),
            "text": text,
            "reply_to": {"story": {"url": story_url, "id": story_id}},
        }
        return self._event(customer, None, message=message)

    def batch(
        self, *events: dict[str, Any], entries: list[list[dict[str, Any]]] | None = None
    ) -> dict[str, Any]:
        """A webhook body: one entry with `events`, or one entry per list in `entries`."""
        groups = entries if entries is not None else [list(events)]
        return {
            "object": self.object,
            "entry": [
                {"id": self.account_id, "time": self.now_ms(), "messaging": group}
                for group in groups
            ],
        }

    def sign(self, raw: bytes, secret: str | None = None) -> str:
        key = (secret or self.app_secret).encode()
        return "sha256=" + hmac.new(key, raw, hashlib.sha256).hexdigest()

    async def post_webhook(
        self,
        hub_url: str,
        doc: dict[str, Any] | bytes,
        *,
        signature: str = "valid",
        path: str | None = None,
    ) -> tuple[int, str]:
        """POST a webhook to the hub as Meta does; signature "valid", "missing" or "wrong"."""
        raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        headers = {"Content-Type": "application/json"}
        if signature == "valid":
            headers["X-Hub-Signature-256"] = self.sign(raw)
        elif signature == "wrong":
            headers["X-Hub-Signature-256"] = self.sign(raw, secret="not-the-app-secret")
        url = f"{hub_url}{path or '/webhooks/' + self.kind}"
        async with aiohttp.ClientSession() as http, http.post(url, data=raw, headers=headers) as r:
            text = await r.text()
            status = r.status
        if status == 200 and isinstance(doc, dict):
            self._remember_inbound(doc)
        return status, text

    def _remember_inbound(self, doc: dict[str, Any]) -> None:
        """Meta's reply window starts with the customer's message: track it for _check_send."""
        for entry in doc.get("entry", []):
            for ev in entry.get("messaging", []):
                message = ev.get("message") or {}
                customer = (ev.get("sender") or {}).get("id")
                if not message or message.get("is_echo") or customer == self.account_id:
                    continue
                stamp = int(ev.get("timestamp") or 0)
                self.last_inbound_ms[customer] = max(self.last_inbound_ms.get(customer, 0), stamp)


def _error(failure: Failure) -> web.Response:
    return web.json_response(failure.body(), status=failure.status, headers=failure.headers)


def _form_json(form: dict[str, Any]) -> dict[str, Any]:
    """The Send API also takes form fields whose values are JSON (as in Meta's curl -F)."""
    out: dict[str, Any] = {}
    for key, value in form.items():
        try:
            out[key] = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            out[key] = value
    return out
