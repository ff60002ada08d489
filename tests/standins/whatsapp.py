"""A loopback stand-in of the WhatsApp Cloud API (Graph API) for tests, plus Meta's side of
the webhooks: signed deliveries to the hub exactly as Meta sends them.

Speaks the documented endpoints the hub uses (see tests/fixtures/whatsapp/SOURCES.md):
POST /{version}/{phone_number_id}/messages, POST /{version}/{phone_number_id}/media,
GET /{version}/{media_id} and the media download URL, each requiring
`Authorization: Bearer <access token>` (401 with a documented Graph API error otherwise).
Every request is recorded (with the time.perf_counter() of its arrival, and handed to the
callables in `listeners`, e.g. a benchmark awaiting its sends); `fail_next` makes the next
calls fail with documented errors; `faults`, a callable handed every `messages` request, can
make any of them answer late, never (past the hub's timeout) or with an error (`Fault`), e.g.
a share of them chosen at random by bench/faults.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.standins.loopback import serve_on_loopback

API_VERSION = "v21.0"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_NUMBER = "15550783881"
WABA_ID = "102290129340398"

# Documented titles/details of the codes tests provoke (support/error-codes).
_DOCUMENTED: dict[int, tuple[str, str]] = {
    130429: (
        "Rate limit hit",
        "Cloud API message throughput has been reached.",
    ),
    131056: (
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
    131047: (
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
    ),
    131026: ("Message Undeliverable", "Unable to deliver message."),
    100: ("Invalid parameter", "The request included one or more unsupported parameters."),
    190: ("Error validating access token", "Access token has expired."),
}


def graph_error(
    code: int, message: str | None = None, details: str | None = None
) -> dict[str, Any]:
    """The Graph API error body with WhatsApp's error_data (support/error-codes)."""
    title, doc_details = _DOCUMENTED.get(code, ("Error", "Something went wrong."))
    return {
        "error": {
            "message": message or f"(#{code}) {title}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details or doc_details},
            "fbtrace_id": "A" + secrets.token_urlsafe(12),
        }
    }


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)
    status: int = 0
    response: Any = None
    at: float = 0.0  # time.perf_counter() when the request was read
    answered: float = 0.0  # time.perf_counter() when its answer was handed to aiohttp


@dataclass
class _Failure:
    http_status: int
    code: int
    retry_after: float | None
    path_suffix: str
    when: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class Fault:
    """What the `faults` hook makes of one `messages` request: wait `delay` seconds, then
    answer `http_status` with a documented Graph API error of `code` (with no code: a
    gateway's plain-text error page, as Meta's edge sends now and then) and `Retry-After`
    when given; without `http_status`, answer as usual (a slow answer; a delay beyond the
    hub's timeout is a message the provider took while the hub gave up waiting)."""

    delay: float = 0.0
    http_status: int | None = None
    code: int | None = 131000
    retry_after: float | None = None


CATALOG_ID = "194836987003835"


class WhatsappStandin:
    def __init__(self) -> None:
        self.access_token = "EAAtest" + secrets.token_urlsafe(24)
        self.app_secret = secrets.token_hex(16)
        self.verify_token = "verify-" + secrets.token_urlsafe(12)
        self.phone_number_id = PHONE_NUMBER_ID
        self.voice_note_reply = (
            "Thanks for your voice message! Our team reads messages — could you type your "
            "question? 🙏"
        )
        self.requests: list[Recorded] = []
        self.media: dict[str, tuple[bytes, str]] = {}  # media id → (bytes, mime type)
        self.upload_names: dict[str, str] = {}
        self._failures: list[_Failure] = []
        # Called with every request as it is recorded (before it is checked and answered).
        self.listeners: list[Callable[[Recorded], None]] = []
        # Asked about every POST …/messages after `fail_next`'s failures: None answers as usual.
        self.faults: Callable[[Recorded], Fault | None] | None = None
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_post("/{version}/{phone}/messages", self._messages)
        app.router.add_post("/{version}/{phone}/media", self._upload)
        app.router.add_get("/whatsapp_business/attachments/", self._download)
        app.router.add_get("/{version}/{media_id}", self._media_info)
        self._runner, self.base_url = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def hub_config(self) -> dict[str, Any]:
        """The hub's channels.whatsapp section pointing at this stand-in."""
        return {
            "enabled": True,
            "api_base_url": self.base_url,
            "api_version": API_VERSION,
            "phone_number_id": self.phone_number_id,
            "access_token": self.access_token,
            "app_secret": self.app_secret,
            "verify_token": self.verify_token,
            "request_timeout_seconds": 5,
            "voice_note_reply": self.voice_note_reply,
            "catalog_id": CATALOG_ID,
            "templates": [
                {
                    "name": "order_update",
                    "language": "de",
                    "params": 2,
                    "description": "Hallo {{1}}, Ihre Bestellung {{2}} ist unterwegs.",
                },
                {"name": "hello_world", "language": "en_US", "params": 0},
            ],
        }

    # --- test controls -------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        code: int = 130429,
        http_status: int = 400,
        retry_after: float | None = None,
        path_suffix: str = "/messages",
        when: Callable[[Any], bool] | None = None,
    ) -> None:
        """The next `n` calls to a path ending in `path_suffix` (and whose JSON body
        satisfies `when`, if given) fail with a documented error, e.g. 429 + code 130429 +
        Retry-After, or a permanent 131026."""
        self._failures += [_Failure(http_status, code, retry_after, path_suffix, when)] * n

    def add_media(self, data: bytes, mime_type: str) -> str:
        """A customer's file, downloadable by its media id as Meta serves it."""
        media_id = str(secrets.randbelow(10**15) + 10**15)
        self.media[media_id] = (data, mime_type)
        return media_id

    def sent(self, predicate: Callable[[dict[str, Any]], bool] | None = None) -> list[Recorded]:
        """Successful POST …/messages requests (optionally filtered on their JSON body)."""
        return [
            r
            for r in self.requests
            if r.method == "POST"
            and r.path.endswith("/messages")
            and r.status == 200
            and (predicate is None or predicate(r.json))
        ]

    async def wait_sent(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        count: int = 1,
        timeout: float = 20,
    ) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.sent(predicate)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                bodies = [r.json for r in self.sent()]
                raise TimeoutError(f"stand-in got no such message; sent: {bodies!r}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                pass

    # --- the Graph API -------------------------------------------------------------------

    def _record(self, request: web.Request, **extra: Any) -> Recorded:
        rec = Recorded(
            request.method,
            request.path,
            dict(request.headers),
            dict(request.query),
            at=time.perf_counter(),
            **extra,
        )
        self.requests.append(rec)
        for listener in self.listeners:
            listener(rec)
        return rec

    def _reply(
        self, rec: Recorded, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> web.Response:
        rec.status, rec.response = status, body
        rec.answered = time.perf_counter()
        self._changed.set()
        return web.json_response(body, status=status, headers=headers)

    def _authorized(self, request: web.Request) -> bool:
        expected = f"Bearer {self.access_token}".encode()
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, expected)

    def _unauthorized(self, rec: Recorded) -> web.Response:
        body = graph_error(190, "Invalid OAuth access token - Cannot parse access token")
        return self._reply(rec, 401, body)

    def _failure(self, rec: Recorded) -> web.Response | None:
        for i, failure in enumerate(self._failures):
            if rec.path.endswith(failure.path_suffix) and (
                failure.when is None or failure.when(rec.json)
            ):
                del self._failures[i]
                headers = (
                    {"Retry-After": str(int(failure.retry_after))}
                    if failure.retry_after is not None
                    else None
                )
                return self._reply(rec, failure.http_status, graph_error(failure.code), headers)
        return None

    async def _messages(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        rec = self._record(request, json=body)
        if not self._authorized(request):
            return self._unauthorized(rec)
        if request.match_info["phone"] != self.phone_number_id:
            return self._reply(rec, 400, graph_error(100, "(#100) Unknown phone number id"))
        failed = self._failure(rec)
        if failed is not None:
            return failed
        fault = self.faults(rec) if self.faults is not None else None
        if fault is not None:
            answer = await self._fault(rec, fault)
            if answer is not None:
                return answer
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return self._reply(rec, 400, graph_error(100))
        if body.get("status") == "read":  # messages/mark-message-as-read
            return self._reply(rec, 200, {"success": True})
        to = str(body.get("to") or "")
        kind = body.get("type")
        if not to or not kind or not isinstance(body.get(kind), dict):
            return self._reply(rec, 400, graph_error(100))
        wamid = "wamid." + secrets.token_urlsafe(30)
        return self._reply(
            rec,
            200,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
                "messages": [{"id": wamid}],
            },
        )

    async def _fault(self, rec: Recorded, fault: Fault) -> web.Response | None:
        """Wait, then the fault's error answer (None: answer as usual)."""
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.http_status is None:
            return None
        headers = (
            {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else None
        )
        if fault.code is None:
            rec.status, rec.response = fault.http_status, None
            rec.answered = time.perf_counter()
            self._changed.set()
            return web.Response(
                status=fault.http_status,
                text=f"{fault.http_status} Server Error",
                content_type="text/plain",
                headers=headers,
            )
        return self._reply(rec, fault.http_status, graph_error(fault.code), headers)

    async def _upload(self, request: web.Request) -> web.Response:
        rec = self._record(request)
        if not self._authorized(request):
            return self._unauthorized(rec)
        form: dict[str, Any] = {}
        file_bytes, file_type, file_name = b"", "", ""
        async for part in await request.multipart():
            if part.name == "file":
                file_bytes = await part.read()  # type: ignore[union-attr]
                file_type = part.headers.get("Content-Type", "")  # type: ignore[union-attr]
                file_name = part.filename or ""  # type: ignore[union-attr]
                form["file"] = {"size": len(file_bytes), "type": file_type, "name": file_name}
            else:
                form[str(part.name)] = await part.text()  # type: ignore[union-attr]
        rec.form = form
        failed = self._failure(rec)
        if failed is not None:
            return failed
        if form.get("messaging_product") != "whatsapp" or not file_bytes:
            return self._reply(rec, 400, graph_error(100))
        media_id = str(secrets.randbelow(10**15) + 10**15)
        self.media[media_id] = (file_bytes, form.get("type") or file_type)
        self.upload_names[media_id] = file_name
        return self._reply(rec, 200, {"id": media_id})

    async def _media_info(self, request: web.Request) -> web.Response:
        rec = self._record(request)
        if not self._authorized(request):
            return self._unauthorized(rec)
        media_id = request.match_info["media_id"]
        if media_id not in self.media:
            return self._reply(rec, 400, graph_error(100, "(#100) Invalid media id"))
        data, mime = self.media[media_id]
        return self._reply(
            rec,
            200,
            {
                "messaging_product": "whatsapp",
                "url": f"{self.base_url}/whatsapp_business/attachments/?mid={media_id}",
                "mime_type": mime,
                "sha256": hashlib.sha256(data).hexdigest(),
                "file_size": str(len(data)),
                "id": media_id,
            },
        )

    async def _download(self, request: web.Request) -> web.StreamResponse:
        rec = self._record(request)
        if not self._authorized(request):
            return self._unauthorized(rec)
        found = self.media.get(request.query.get("mid", ""))
        if found is None:
            rec.status = 404
            return web.Response(status=404)
        rec.status = 200
        self._changed.set()
        return web.Response(body=found[0], content_type=found[1].split(";")[0])

    # --- Meta's side of the webhooks -----------------------------------------------------

    def sign(self, raw: bytes) -> str:
        return "sha256=" + hmac.new(self.app_secret.encode(), raw, hashlib.sha256).hexdigest()

    async def post_webhook(
        self,
        hub_url: str,
        payload: dict[str, Any],
        *,
        signature: str | None = "valid",
        raw: bytes | None = None,
    ) -> tuple[int, str]:
        """POST a webhook to the hub as Meta does: compact JSON with non-ASCII escaped, and
        X-Hub-Signature-256 over exactly those bytes. `signature=None` sends none; any other
        string than "valid" is sent as the header verbatim (a forgery)."""
        body = raw if raw is not None else json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
        if signature == "valid":
            headers["X-Hub-Signature-256"] = self.sign(body)
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{hub_url}/webhooks/whatsapp", data=body, headers=headers) as resp,
        ):
            return resp.status, await resp.text()

    # --- payload builders (shapes of the webhook references) ------------------------------

    def webhook(self, *entries: list[dict[str, Any]]) -> dict[str, Any]:
        """A messages webhook; each argument is the list of change values of one entry."""
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {"id": WABA_ID, "changes": [{"value": v, "field": "messages"} for v in values]}
                for values in entries
            ],
        }

    def value(
        self,
        contacts: list[tuple[str, str]] | None = None,
        messages: list[dict[str, Any]] | None = None,
        statuses: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        value: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": DISPLAY_NUMBER,
                "phone_number_id": self.phone_number_id,
            },
        }
        if contacts:
            value["contacts"] = [{"profile": {"name": n}, "wa_id": w} for w, n in contacts]
        if messages:
            value["messages"] = list(messages)
        if statuses:
            value["statuses"] = list(statuses)
        return value

    @staticmethod
    def message(
        wa_id: str,
        mtype: str,
        content: dict[str, Any],
        *,
        msg_id: str | None = None,
        timestamp: int | None = None,
        context_id: str | None = None,
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "from": wa_id,
            "id": msg_id or "wamid." + secrets.token_urlsafe(30),
            "timestamp": str(timestamp if timestamp is not None else int(time.time())),
            "type": mtype,
            mtype: content,
        }
        if context_id:
            msg["context"] = {"from": DISPLAY_NUMBER, "id": context_id}
        return msg

    def text_webhook(
        self, wa_id: str, name: str, text: str, **kwargs: Any
    ) -> tuple[dict[str, Any], str]:
        """A customer's text message; returns (payload, wamid)."""
        msg = self.message(wa_id, "text", {"body": text}, **kwargs)
        return self.webhook([self.value([(wa_id, name)], [msg])]), msg["id"]

    def media_webhook(
        self,
        wa_id: str,
        name: str,
        mtype: str,
        media_id: str,
        *,
        caption: str | None = None,
        filename: str | None = None,
        voice: bool | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], str]:
        """image/video/document/sticker/audio by media id, as in the webhook references."""
        data, mime = self.media.get(media_id, (b"", "application/octet-stream"))
        content: dict[str, Any] = {
            "mime_type": mime,
            "sha256": hashlib.sha256(data).hexdigest(),
            "id": media_id,
        }
        if caption is not None:
            content["caption"] = caption
        if filename is not None:
            content["filename"] = filename
        if voice is not None:
            content["voice"] = voice
        msg = self.message(wa_id, mtype, content, **kwargs)
        return self.webhook([self.value([(wa_id, name)], [msg])]), msg["id"]

    def status_webhook(
        self, wamid: str, status: str, recipient_id: str, *, error_code: int | None = None
    ) -> dict[str, Any]:
        """A statuses webhook; a `failed` one carries the documented errors[] object."""
        entry: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": recipient_id,
        }
        if error_code is not None:
            title, details = _DOCUMENTED.get(error_code, ("Error", "Something went wrong."))
            entry["errors"] = [
                {
                    "code": error_code,
                    "title": title,
                    "message": title,
                    "error_data": {"details": details},
                    "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
                }
            ]
        return self.webhook([self.value(statuses=[entry])])
