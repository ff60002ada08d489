"""A loopback stand-in of the Stripe API parts the hub uses, and Stripe's side of the webhooks.

API (docs "Create a Checkout Session" / "Retrieve a Checkout Session"): POST
/v1/checkout/sessions with a form-encoded body exactly as the official SDK sends it (nested
``line_items[0][price_data][unit_amount]=...``), GET /v1/checkout/sessions/{id}; both need
``Authorization: Bearer <secret key>`` and answer the documented JSON shapes and error bodies
(``{"error": {"type", "code", "message", "param"}}``). ``Idempotency-Key`` replays the first
answer, or fails with an idempotency_error when the parameters differ, as Stripe does. Amount
rules checked as Stripe documents them: three-decimal currencies must end in 0, ISK in 00.

Webhooks: events ``checkout.session.completed`` / ``expired`` / ``async_payment_*`` signed with
the real scheme, ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">``.

For browser tests the session ``url`` opens a tiny hosted page here with Pay / Cancel buttons:
paying marks the session paid, delivers the signed event to ``webhook_url`` (if set) and
redirects to the session's success_url.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.standins.loopback import serve_on_loopback

API_VERSION = "2025-09-30.clover"
_INDEX = re.compile(r"\[([^\]]*)\]")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)  # flat, as sent
    params: dict[str, Any] = field(default_factory=dict)  # nested
    status: int = 0
    response: Any = None


def unflatten(form: dict[str, str]) -> dict[str, Any]:
    """``{"a[0][b]": "1"}`` -> ``{"a": [{"b": "1"}]}`` (Stripe's form encoding, reversed)."""
    root: dict[str, Any] = {}
    for key, value in form.items():
        parts = [key.split("[", 1)[0], *_INDEX.findall(key)]
        node: Any = root
        for part, following in itertools.pairwise(parts):
            node = _slot(node, part, [] if following.isdigit() else {})
        _slot(node, parts[-1], value, replace=True)
    return root


def _slot(node: Any, part: str, value: Any, *, replace: bool = False) -> Any:
    if isinstance(node, list):
        index = int(part)
        node.extend([None] * (index + 1 - len(node)))
        if replace or node[index] is None:
            node[index] = value
        return node[index]
    if replace:
        node[part] = value
        return value
    return node.setdefault(part, value)


def stripe_error(
    kind: str, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return {"error": error}


class StripeStandin:
    def __init__(self) -> None:
        self.secret_key = "sk_test_" + secrets.token_hex(24)
        self.webhook_secret = "whsec_" + secrets.token_hex(24)
        self.sessions: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.webhook_url: str | None = None  # where the hosted page delivers events
        self.delivered: list[tuple[int, dict[str, Any]]] = []  # (hub status, event)
        self._idempotent: dict[str, tuple[dict[str, str], int, Any]] = {}
        self._failures: list[tuple[int, dict[str, Any]]] = []
        self.delay_seconds = 0.0  # answer API calls this late (timeout tests)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", self._create)
        app.router.add_get("/v1/checkout/sessions/{id}", self._retrieve)
        app.router.add_get("/c/pay/{id}", self._hosted_page)
        app.router.add_post("/c/pay/{id}", self._hosted_submit)
        self._runner, self.base_url = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def hub_config(self) -> dict[str, Any]:
        """The hub's commerce.stripe section pointing at this stand-in."""
        return {
            "secret_key": self.secret_key,
            "webhook_secret": self.webhook_secret,
            "api_base_url": self.base_url,
            "request_timeout_seconds": 5,
            "max_network_retries": 0,
        }

    # --- test controls ---------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 400,
        kind: str = "invalid_request_error",
        message: str = "Invalid request",
        *,
        code: str | None = None,
    ) -> None:
        """The next create call fails with this documented error body."""
        self._failures.append((status, stripe_error(kind, message, code=code)))

    def created(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.status == 200]

    def event(self, session_id: str, event_type: str = "checkout.session.completed") -> dict:
        """The event Stripe sends for ``session_id`` now (updates the session first)."""
        session = self.sessions[session_id]
        if event_type in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
            session.update(status="complete", payment_status="paid")
            session["payment_intent"] = session["payment_intent"] or "pi_" + secrets.token_hex(12)
        elif event_type == "checkout.session.expired":
            session.update(status="expired", url=None)
        return {
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": dict(session)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }

    def sign(self, payload: bytes, timestamp: int | None = None, secret: str | None = None) -> str:
        t = int(time.time()) if timestamp is None else timestamp
        signed = f"{t}.".encode() + payload
        digest = hmac.new((secret or self.webhook_secret).encode(), signed, hashlib.sha256)
        return f"t={t},v1={digest.hexdigest()}"

    def delivery(
        self,
        event: dict[str, Any],
        *,
        signature: str | None = "valid",
        timestamp: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """(raw body, headers) as Stripe POSTs them; ``signature=None`` sends none, any other
        string than "valid" is sent verbatim (a forgery)."""
        raw = json.dumps(event, indent=2).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Stripe/1.0"}
        if signature == "valid":
            headers["Stripe-Signature"] = self.sign(raw, timestamp)
        elif signature is not None:
            headers["Stripe-Signature"] = signature
        return raw, headers

    async def post_event(self, url: str, event: dict[str, Any], **kwargs: Any) -> tuple[int, str]:
        raw, headers = self.delivery(event, **kwargs)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=raw, headers=headers) as resp,
        ):
            return resp.status, await resp.text()

    # --- the API ---------------------------------------------------------------------------

    def _reply(self, rec: Recorded, status: int, body: Any) -> web.Response:
        rec.status, rec.response = status, body
        return web.json_response(body, status=status, headers={"Request-Id": "req_" + "x" * 14})

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, f"Bearer {self.secret_key}".encode())

    async def _create(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay_seconds)
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        rec = Recorded("POST", request.path, dict(request.headers), form, unflatten(form))
        self.requests.append(rec)
        if not self._authorized(request):
            return self._reply(rec, 401, stripe_error("invalid_request_error", "Invalid API Key"))
        key = request.headers.get("Idempotency-Key")
        if key and key in self._idempotent:
            first_form, status, body = self._idempotent[key]
            if first_form != form:
                message = "Keys for idempotent requests can only be used with the same parameters"
                return self._reply(rec, 400, stripe_error("idempotency_error", message))
            return self._reply(rec, status, body)
        if self._failures:
            status, body = self._failures.pop(0)
            return self._reply(rec, status, body)
        status, body = self._session(rec.params)
        if key:
            self._idempotent[key] = (form, status, body)
        return self._reply(rec, status, body)

    def _session(self, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if p.get("mode") not in ("payment", "setup", "subscription"):
            return 400, stripe_error("invalid_request_error", "Missing mode", param="mode")
        items = p.get("line_items") or []
        currencies, total = set(), 0
        for i, item in enumerate(items):
            data = (item or {}).get("price_data") or {}
            currency, amount = data.get("currency", ""), data.get("unit_amount", "")
            if not re.fullmatch(r"[a-z]{3}", currency) or not amount.isdigit():
                return 400, stripe_error(
                    "invalid_request_error", "Invalid price_data", param=f"line_items[{i}]"
                )
            if (currency in ("bhd", "jod", "kwd", "omr", "tnd") and int(amount) % 10) or (
                currency == "isk" and int(amount) % 100
            ):
                return 400, stripe_error(
                    "invalid_request_error",
                    "Invalid amount for this currency",
                    code="invalid_charge_amount_no_decimal_compatible",
                    param=f"line_items[{i}][price_data][unit_amount]",
                )
            currencies.add(currency)
            total += int(amount) * int(item.get("quantity", "1"))
        if not items or len(currencies) != 1:
            return 400, stripe_error("invalid_request_error", "Invalid line_items")
        session_id = "cs_test_" + secrets.token_urlsafe(40).replace("-", "a").replace("_", "b")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": total,
            "amount_total": total,
            "cancel_url": p.get("cancel_url"),
            "client_reference_id": p.get("client_reference_id"),
            "created": int(time.time()),
            "currency": currencies.pop(),
            "customer": None,
            "expires_at": int(time.time()) + 86400,
            "livemode": False,
            "locale": p.get("locale"),
            "metadata": p.get("metadata") or {},
            "mode": p["mode"],
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": p.get("success_url"),
            "url": f"{self.base_url}/c/pay/{session_id}",
        }
        self.sessions[session_id] = session
        return 200, session

    async def _retrieve(self, request: web.Request) -> web.Response:
        rec = Recorded("GET", request.path, dict(request.headers))
        self.requests.append(rec)
        if not self._authorized(request):
            return self._reply(rec, 401, stripe_error("invalid_request_error", "Invalid API Key"))
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            message = f"No such checkout.session: '{request.match_info['id']}'"
            return self._reply(
                rec, 404, stripe_error("invalid_request_error", message, code="resource_missing")
            )
        return self._reply(rec, 200, session)

    # --- a hosted page for browser tests ---------------------------------------------------

    async def _hosted_page(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None or session["status"] != "open":
            raise web.HTTPNotFound(text="This checkout session is no longer available.")
        amount = f"{session['amount_total']} {session['currency'].upper()} (minor units)"
        page = (
            "<!doctype html><meta charset=utf-8><title>Stripe stand-in</title>"
            f"<h1>Pay {html.escape(amount)}</h1><form method=post>"
            "<button name=action value=pay data-testid=stripe-pay>Pay</button> "
            "<button name=action value=cancel data-testid=stripe-cancel>Cancel</button></form>"
        )
        return web.Response(text=page, content_type="text/html")

    async def _hosted_submit(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None or session["status"] != "open":
            raise web.HTTPNotFound()
        if (await request.post()).get("action") != "pay":
            raise web.HTTPSeeOther(str(session["cancel_url"]))
        event = self.event(session["id"])
        if self.webhook_url:
            status, _ = await self.post_event(self.webhook_url, event)
            self.delivered.append((status, event))
        raise web.HTTPSeeOther(str(session["success_url"]))
