"""A loopback stand-in of Mollie's Payments API (v2) and Mollie's side of its webhook.

API (docs "Create payment", "Get payment"): POST /v2/payments (JSON) and GET
/v2/payments/{id}, both with ``Authorization: Bearer <api key>``; answers are
``application/hal+json`` payment objects with ``_links.checkout``, errors the documented
``{"status", "title", "detail", "field", "_links"}`` shape. ``amount.value`` must be a string
with exactly the currency's decimals (422 otherwise), ``description`` and ``redirectUrl`` are
required, ``Idempotency-Key`` replays the first answer. Every request is recorded.

Webhook: ``set_status(id, "paid")`` changes the payment as Mollie would, ``call_webhook(id)``
POSTs the form ``id=tr_...`` (no signature, as documented) to the payment's webhookUrl.

For browser tests the checkout link opens a page here with one button per outcome; choosing
one sets the status, calls the webhook and redirects to redirectUrl (cancelUrl on cancel).
"""

from __future__ import annotations

import asyncio
import hmac
import html
import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from babel.numbers import get_currency_precision, is_currency

from tests.standins.loopback import serve_on_loopback

DOCS = {"documentation": {"href": "https://docs.mollie.com/overview/handling-errors"}}
_STAMP = {"paid": "paidAt", "canceled": "canceledAt", "expired": "expiredAt", "failed": "failedAt"}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    status: int = 0
    response: Any = None


def mollie_error(status: int, title: str, detail: str, field: str | None = None) -> dict:
    body: dict[str, Any] = {"status": status, "title": title, "detail": detail, "_links": DOCS}
    if field:
        body["field"] = field
    return body


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class MollieStandin:
    def __init__(self) -> None:
        self.api_key = "test_" + "".join(
            secrets.choice(string.ascii_letters + string.digits) for _ in range(30)
        )
        self.payments: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.webhook_calls: list[tuple[str, int]] = []  # (payment id, hub status)
        self._idempotent: dict[str, tuple[int, Any]] = {}
        self._failures: list[tuple[str, int, dict[str, Any]]] = []
        self.delay_seconds = 0.0  # answer API calls this late (timeout tests)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v2/payments", self._create)
        app.router.add_get("/v2/payments/{id}", self._get)
        app.router.add_get("/checkout/select-method/{id}", self._hosted_page)
        app.router.add_post("/checkout/select-method/{id}", self._hosted_submit)
        self._runner, self.base_url = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def hub_config(self) -> dict[str, Any]:
        """The hub's commerce.mollie section pointing at this stand-in."""
        return {
            "api_key": self.api_key,
            "api_base_url": self.base_url,
            "request_timeout_seconds": 5,
        }

    # --- test controls ---------------------------------------------------------------------

    def fail_next(
        self, status: int = 503, detail: str = "Service unavailable", *, method: str = "POST"
    ) -> None:
        """The next ``method`` call fails with a documented error body."""
        title = {401: "Unauthorized Request", 404: "Not Found", 422: "Unprocessable Entity"}
        body = mollie_error(status, title.get(status, "Service Unavailable"), detail)
        self._failures.append((method, status, body))

    def created(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.status == 201]

    def set_status(self, payment_id: str, status: str) -> dict[str, Any]:
        payment = self.payments[payment_id]
        payment["status"] = status
        if status in _STAMP:
            payment[_STAMP[status]] = _now()
        payment["isCancelable"] = status == "open"
        if status != "open":
            payment["_links"].pop("checkout", None)
        return payment

    async def call_webhook(self, payment_id: str, url: str | None = None) -> tuple[int, str]:
        """POST ``id=<payment id>`` to ``url`` (default: the payment's webhookUrl)."""
        target = url or self.payments[payment_id]["webhookUrl"]
        headers = {"User-Agent": "Mollie HTTP client/1.0"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(target, data={"id": payment_id}, headers=headers) as resp,
        ):
            self.webhook_calls.append((payment_id, resp.status))
            return resp.status, await resp.text()

    # --- the API ---------------------------------------------------------------------------

    def _reply(self, rec: Recorded, status: int, body: Any) -> web.Response:
        rec.status, rec.response = status, body
        return web.json_response(body, status=status, content_type="application/hal+json")

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, f"Bearer {self.api_key}".encode())

    def _failure(self, rec: Recorded) -> web.Response | None:
        for i, (method, status, body) in enumerate(self._failures):
            if method == rec.method:
                del self._failures[i]
                return self._reply(rec, status, body)
        return None

    async def _create(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay_seconds)
        try:
            body = await request.json()
        except ValueError:
            body = None
        rec = Recorded("POST", request.path, dict(request.headers), body)
        self.requests.append(rec)
        if not self._authorized(request):
            return self._reply(rec, 401, mollie_error(401, "Unauthorized Request", "Bad key"))
        key = request.headers.get("Idempotency-Key")
        if key and key in self._idempotent:
            return self._reply(rec, *self._idempotent[key])
        failed = self._failure(rec)
        if failed is not None:
            return failed
        status, answer = self._payment(body)
        if key:
            self._idempotent[key] = (status, answer)
        return self._reply(rec, status, answer)

    def _payment(self, body: Any) -> tuple[int, dict[str, Any]]:
        def invalid(detail: str, field: str) -> tuple[int, dict[str, Any]]:
            return 422, mollie_error(422, "Unprocessable Entity", detail, field)

        if not isinstance(body, dict):
            return 400, mollie_error(400, "Bad Request", "The request body is not JSON")
        amount = body.get("amount")
        currency = amount.get("currency") if isinstance(amount, dict) else None
        value = amount.get("value") if isinstance(amount, dict) else None
        if not isinstance(currency, str) or not is_currency(currency):
            return invalid("The amount contains an invalid currency", "amount.currency")
        digits = get_currency_precision(currency)
        pattern = rf"[0-9]+\.[0-9]{{{digits}}}" if digits else r"[0-9]+"
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            return invalid("The amount contains an invalid value", "amount.value")
        if not body.get("description"):
            return invalid("The description is invalid", "description")
        if not body.get("redirectUrl"):
            return invalid("The redirect URL is invalid", "redirectUrl")
        payment_id = "tr_" + "".join(secrets.choice(string.ascii_letters) for _ in range(10))
        payment = {
            "resource": "payment",
            "id": payment_id,
            "mode": "test",
            "createdAt": _now(),
            "amount": {"value": value, "currency": currency},
            "description": body["description"],
            "method": None,
            "metadata": body.get("metadata"),
            "status": "open",
            "isCancelable": False,
            "expiresAt": (datetime.now(UTC) + timedelta(minutes=15)).isoformat(timespec="seconds"),
            "profileId": "pfl_QkEhN94Ba",
            "sequenceType": "oneoff",
            "redirectUrl": body["redirectUrl"],
            "cancelUrl": body.get("cancelUrl"),
            "webhookUrl": body.get("webhookUrl"),
            "_links": {
                "self": {
                    "href": f"{self.base_url}/v2/payments/{payment_id}",
                    "type": "application/hal+json",
                },
                "checkout": {
                    "href": f"{self.base_url}/checkout/select-method/{payment_id}",
                    "type": "text/html",
                },
                "documentation": DOCS["documentation"],
            },
        }
        self.payments[payment_id] = payment
        return 201, payment

    async def _get(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay_seconds)
        rec = Recorded("GET", request.path, dict(request.headers))
        self.requests.append(rec)
        if not self._authorized(request):
            return self._reply(rec, 401, mollie_error(401, "Unauthorized Request", "Bad key"))
        failed = self._failure(rec)
        if failed is not None:
            return failed
        payment = self.payments.get(request.match_info["id"])
        if payment is None:
            detail = "No payment exists with token " + request.match_info["id"]
            return self._reply(rec, 404, mollie_error(404, "Not Found", detail))
        return self._reply(rec, 200, payment)

    # --- a hosted page for browser tests ---------------------------------------------------

    async def _hosted_page(self, request: web.Request) -> web.Response:
        payment = self.payments.get(request.match_info["id"])
        if payment is None or payment["status"] != "open":
            raise web.HTTPNotFound(text="This payment is no longer open.")
        amount = f"{payment['amount']['value']} {payment['amount']['currency']}"
        buttons = "".join(
            f"<button name=status value={s} data-testid=mollie-{s}>{s}</button> "
            for s in ("paid", "canceled", "failed", "expired")
        )
        page = (
            "<!doctype html><meta charset=utf-8><title>Mollie stand-in</title>"
            f"<h1>Pay {html.escape(amount)}</h1><form method=post>{buttons}</form>"
        )
        return web.Response(text=page, content_type="text/html")

    async def _hosted_submit(self, request: web.Request) -> web.Response:
        payment = self.payments.get(request.match_info["id"])
        status = (await request.post()).get("status")
        if payment is None or payment["status"] != "open" or status not in _STAMP:
            raise web.HTTPNotFound()
        self.set_status(payment["id"], str(status))
        if payment.get("webhookUrl"):
            await self.call_webhook(payment["id"])
        back = payment.get("cancelUrl") if status == "canceled" else None
        raise web.HTTPSeeOther(str(back or payment["redirectUrl"]))
