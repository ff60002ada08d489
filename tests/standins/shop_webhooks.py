"""The shop systems' side of the hub's order webhooks, plus WooCommerce's REST orders endpoint.

- ShopifyWebhooks: REST Order payloads (fields the hub reads: id, name, order_number,
  financial_status, cancelled_at, total_price, currency, note_attributes) delivered with the
  documented headers X-Shopify-Topic, X-Shopify-Hmac-Sha256 (base64 HMAC-SHA256 of the raw
  body), X-Shopify-Shop-Domain, X-Shopify-API-Version, X-Shopify-Webhook-Id,
  X-Shopify-Event-Id, X-Shopify-Triggered-At.
- WooWebhooks: REST v3 order payloads (id, number, status, currency, total, meta_data, ...)
  encoded like wp_json_encode, with the headers WC_Webhook::deliver sets: X-WC-Webhook-Source,
  -Topic, -Resource, -Event, -Signature (base64 HMAC-SHA256), -ID, -Delivery-ID; and the
  unsigned ``webhook_id=N`` ping WooCommerce sends when a webhook is saved.
- WooCommerceStandin: POST /wp-json/wc/v3/orders (Basic auth with consumer key/secret) for the
  provider's "order" mode; answers 201 with the order, including the documented payment_url.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web

from tests.standins.loopback import serve_on_loopback


def b64_hmac(secret: str, raw: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()


async def _post(url: str, raw: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(url, data=raw, headers=headers) as resp:
        return resp.status, await resp.text()


def _signed(headers: dict[str, str], name: str, value: str, signature: str | None) -> None:
    """``signature``: "valid" -> ``value``; None -> no header; anything else -> verbatim."""
    if signature == "valid":
        headers[name] = value
    elif signature is not None:
        headers[name] = signature


class ShopifyWebhooks:
    def __init__(self, secret: str | None = None, shop_domain: str = "hub-test.myshopify.com"):
        self.secret = secret or secrets.token_hex(32)
        self.shop_domain = shop_domain
        self.api_version = "2025-07"
        self._next_number = 1001

    def order(
        self,
        *,
        reference: str | None,
        total: str = "54.30",
        currency: str = "EUR",
        financial_status: str = "paid",
        cancelled: bool = False,
        order_id: int | None = None,
        attribute: str = "hub_reference",
    ) -> dict[str, Any]:
        number = self._next_number
        self._next_number += 1
        notes = [{"name": attribute, "value": reference}] if reference is not None else []
        return {
            "id": order_id or 820982911946154508 + number,
            "admin_graphql_api_id": f"gid://shopify/Order/{order_id or number}",
            "name": f"#{number}",
            "order_number": number,
            "number": number - 1000,
            "email": "kundin@example.com",
            "created_at": "2026-05-04T13:53:06-04:00",
            "currency": currency,
            "presentment_currency": currency,
            "financial_status": financial_status,
            "fulfillment_status": None,
            "cancelled_at": "2026-05-04T14:00:00-04:00" if cancelled else None,
            "cancel_reason": "customer" if cancelled else None,
            "total_price": total,
            "subtotal_price": total,
            "total_tax": "0.00",
            "taxes_included": True,
            "note": None,
            "note_attributes": notes,
            "landing_site_ref": None,
            "test": True,
            "line_items": [],
        }

    def headers(
        self,
        raw: bytes,
        topic: str = "orders/create",
        *,
        signature: str | None = "valid",
        webhook_id: str | None = None,
    ) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": self.shop_domain,
            "X-Shopify-API-Version": self.api_version,
            "X-Shopify-Webhook-Id": webhook_id or secrets.token_hex(16),
            "X-Shopify-Event-Id": secrets.token_hex(16),
            "X-Shopify-Triggered-At": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _signed(headers, "X-Shopify-Hmac-Sha256", b64_hmac(self.secret, raw), signature)
        return headers

    def delivery(
        self, payload: dict[str, Any], topic: str = "orders/create", **kwargs: Any
    ) -> tuple[bytes, dict[str, str]]:
        raw = json.dumps(payload, ensure_ascii=False).encode()
        return raw, self.headers(raw, topic, **kwargs)

    async def send(self, url: str, payload: dict[str, Any], **kwargs: Any) -> tuple[int, str]:
        return await _post(url, *self.delivery(payload, **kwargs))


class WooWebhooks:
    def __init__(
        self, secret: str | None = None, source: str = "https://shop.example/", webhook_id: int = 7
    ) -> None:
        self.secret = secret or secrets.token_urlsafe(32)
        self.source = source
        self.webhook_id = webhook_id

    @staticmethod
    def order(
        *,
        order_id: int = 4750,
        status: str = "processing",
        total: str = "54.30",
        currency: str = "EUR",
        meta: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": order_id,
            "parent_id": 0,
            "number": str(order_id),
            "order_key": "wc_order_" + secrets.token_hex(6),
            "created_via": "checkout",
            "status": status,
            "currency": currency,
            "prices_include_tax": True,
            "total": total,
            "total_tax": "0.00",
            "payment_method": "bacs",
            "payment_method_title": "Direct bank transfer",
            "billing": {"first_name": "Zoë", "last_name": "Müller", "email": "zoe@example.com"},
            "meta_data": [
                {"id": 300000 + i, "key": k, "value": v}
                for i, (k, v) in enumerate((meta or {}).items())
            ],
            "line_items": [],
        }

    def headers(
        self,
        raw: bytes,
        topic: str = "order.updated",
        *,
        signature: str | None = "valid",
        delivery_id: str | None = None,
    ) -> dict[str, str]:
        resource, event = topic.split(".", 1)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "WooCommerce/9.9.0 Hookshot (WordPress/6.8)",
            "X-WC-Webhook-Source": self.source,
            "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Resource": resource,
            "X-WC-Webhook-Event": event,
            "X-WC-Webhook-ID": str(self.webhook_id),
            "X-WC-Webhook-Delivery-ID": delivery_id or secrets.token_hex(16),
        }
        _signed(headers, "X-WC-Webhook-Signature", b64_hmac(self.secret, raw), signature)
        return headers

    def delivery(
        self, payload: dict[str, Any], topic: str = "order.updated", **kwargs: Any
    ) -> tuple[bytes, dict[str, str]]:
        # wp_json_encode: compact, "/" escaped as "\/", non-ASCII as \uXXXX.
        raw = json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()
        return raw, self.headers(raw, topic, **kwargs)

    async def send(self, url: str, payload: dict[str, Any], **kwargs: Any) -> tuple[int, str]:
        return await _post(url, *self.delivery(payload, **kwargs))

    def ping(self) -> tuple[bytes, dict[str, str]]:
        """WC_Webhook::deliver_ping: a form body, no X-WC-* headers, no signature."""
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "WooCommerce/9.9.0 Hookshot (WordPress/6.8)",
        }
        return f"webhook_id={self.webhook_id}".encode(), headers

    async def send_ping(self, url: str) -> tuple[int, str]:
        return await _post(url, *self.ping())


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    json: Any
    status: int = 0


class WooCommerceStandin:
    """POST /wp-json/wc/v3/orders as the REST API answers it (prices from ``products``)."""

    def __init__(self) -> None:
        self.consumer_key = "ck_" + secrets.token_hex(20)
        self.consumer_secret = "cs_" + secrets.token_hex(20)
        self.webhooks = WooWebhooks()
        self.products: dict[int, Decimal] = {}  # product/variation id -> gross price
        self.orders: dict[int, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.fail_status: list[int] = []  # statuses the next calls answer with
        self._next_id = 5000
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/wp-json/wc/v3/orders", self._create)
        self._runner, self.base_url = await serve_on_loopback(app)
        self.webhooks.source = self.base_url + "/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def hub_config(self, mode: str = "order") -> dict[str, Any]:
        return {
            "store_url": self.base_url,
            "webhook_secret": self.webhooks.secret,
            "mode": mode,
            "consumer_key": self.consumer_key,
            "consumer_secret": self.consumer_secret,
            "request_timeout_seconds": 5,
        }

    def webhook_payload(self, order_id: int, status: str) -> dict[str, Any]:
        """The stored order as the webhook carries it, after a status change."""
        self.orders[order_id]["status"] = status
        return dict(self.orders[order_id])

    def _error(self, rec: Recorded, status: int, code: str, message: str) -> web.Response:
        rec.status = status
        body = {"code": code, "message": message, "data": {"status": status}}
        return web.json_response(body, status=status)

    async def _create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        rec = Recorded(request.path, dict(request.headers), body)
        self.requests.append(rec)
        pair = f"{self.consumer_key}:{self.consumer_secret}".encode()
        expected = "Basic " + base64.b64encode(pair).decode()
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            return self._error(
                rec,
                401,
                "woocommerce_rest_cannot_create",
                "Sorry, you are not allowed to create resources.",
            )
        if self.fail_status:
            status = self.fail_status.pop(0)
            return self._error(rec, status, "internal_server_error", "There has been an error.")
        items = body.get("line_items") if isinstance(body, dict) else None
        if not items:
            return self._error(
                rec,
                400,
                "woocommerce_rest_required_product_reference",
                "Product ID or SKU is required.",
            )
        total = Decimal(0)
        for item in items:
            price = self.products.get(int(item.get("product_id", 0)))
            if price is None:
                return self._error(
                    rec, 400, "woocommerce_rest_invalid_product_id", "Invalid product ID."
                )
            total += price * int(item.get("quantity", 1))
        order_id, self._next_id = self._next_id, self._next_id + 1
        key = "wc_order_" + secrets.token_urlsafe(9)
        order = self.webhooks.order(
            order_id=order_id,
            status=body.get("status", "pending"),
            total=f"{total:.2f}",
            currency=body.get("currency", "EUR"),
            meta={m["key"]: m["value"] for m in body.get("meta_data", [])},
        )
        order.update(
            order_key=key,
            created_via="rest-api",
            line_items=[dict(item) for item in items],
            payment_url=f"{self.base_url}/checkout/order-pay/{order_id}/?pay_for_order=true&key={key}",
        )
        self.orders[order_id] = order
        rec.status = 201
        return web.json_response(order, status=201)
