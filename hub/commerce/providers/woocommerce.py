"""WooCommerce: an add-to-cart link (or a pending order to pay), the order reported by webhook.

Two ways to a checkout, chosen with ``mode``:

- ``link`` (default, no API keys): core WooCommerce's add-to-cart URL,
  ``STORE/cart/?add-to-cart=ID&quantity=N``. Core handles ONE product per link (WC_Form_Handler
  reads a single ``add-to-cart`` id and one ``quantity``), so a cart with several lines is
  refused with a clear message, unless ``multi_product_links`` is on for shops that run a plugin
  reading ``add-to-cart=ID:QTY,ID:QTY`` (e.g. "Add multiple products to cart via URL"). The link
  carries ``utm_source``/``utm_medium``/``utm_content=<reference>``: WooCommerce's Order
  Attribution (core since 8.5, on by default) stores them on the order as
  ``_wc_order_attribution_utm_content``, which is how the paid order is matched back. Without
  Order Attribution the order still arrives, but unmatched (the hub logs it).
- ``order`` (REST API keys with write access): ``POST /wp-json/wc/v3/orders`` creates a pending
  order with every line and ``meta_data`` carrying our reference; the customer gets the order's
  documented ``payment_url`` (the "pay for order" page). Any number of lines, exact matching;
  but that page takes payment only, not a shipping address, so use it when the adviser already
  has the address (or the goods need none). WooCommerce computes prices, tax and shipping.

Webhooks (topics order.created / order.updated): ``X-WC-Webhook-Signature`` is
base64(HMAC-SHA256(raw body, secret)), checked in constant time first. Saving a webhook in the
admin sends an unsigned ping whose body is ``webhook_id=N``; it is answered 200 with no events
(it carries no data), because WooCommerce refuses to save a webhook whose ping fails.
Status mapping: processing/completed -> "paid", cancelled -> "cancelled", failed -> "failed",
pending/on-hold (awaiting payment) -> no event yet.

Dedupe: ``X-WC-Webhook-Delivery-ID`` is new for every delivery (wp_hash of id and time) and
order.updated fires on every edit, so the event id is ``order-<id>:<kind>``: any number of
"order 123 is processing/completed" deliveries is one "paid" event.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from hub.commerce.providers.base import (
    CheckoutLink,
    CheckoutRequest,
    PaymentEvent,
    PaymentKind,
    WebhookRejected,
    header,
    hmac_sha256_base64_matches,
    json_object,
    money_from_text,
    require_items,
)
from hub.commerce.providers.settings import WooCommerceSettings
from hub.errors import ExternalError
from hub.i18n import _

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

ORDER_TOPICS = frozenset({"order.created", "order.updated"})
ATTRIBUTION_KEY = "_wc_order_attribution_utm_content"
_STATUS: Mapping[str, PaymentKind] = {
    "processing": "paid",
    "completed": "paid",
    "cancelled": "cancelled",
    "failed": "failed",
}
_PING_RE = re.compile(rb"webhook_id=[0-9]{1,20}")
_ID_RE = re.compile(r"[0-9]{1,20}")


def _product_ids(req: CheckoutRequest) -> list[tuple[str, int]]:
    require_items(req)
    ids, missing = [], []
    for line in req.cart.lines:
        product = (line.variant_id or "").strip()
        if _ID_RE.fullmatch(product):
            ids.append((product, line.quantity))
        else:
            missing.append(line.label())
    if missing:
        raise ExternalError(
            _(
                "WooCommerce needs the product (or variation) id of every product as variant_id "
                "in the catalogue; missing or not a number for: {products}"
            ).format(products=", ".join(missing)),
            permanent=True,
        )
    return ids


def add_to_cart_url(settings: WooCommerceSettings, req: CheckoutRequest) -> str:
    """The add-to-cart link (mode "link"); ExternalError for what it cannot carry."""
    ids = _product_ids(req)
    if len(ids) > 1 and not settings.multi_product_links:
        raise ExternalError(
            _(
                "a WooCommerce add-to-cart link carries one product, this cart has {n}. Send one "
                "product per order, or set commerce.woocommerce.mode to 'order' (REST API keys) "
                "or multi_product_links (needs a multi add-to-cart plugin)."
            ).format(n=len(ids)),
            permanent=True,
        )
    query: dict[str, str]
    if len(ids) == 1:
        query = {"add-to-cart": ids[0][0], "quantity": str(ids[0][1])}
    else:
        query = {"add-to-cart": ",".join(f"{pid}:{qty}" for pid, qty in ids)}
    query |= {
        "utm_source": settings.utm_source,
        "utm_medium": settings.utm_medium,
        "utm_content": req.reference,
    }
    return f"{settings.store_url}{settings.cart_path}?{urlencode(query, safe=':,')}"


def order_body(settings: WooCommerceSettings, req: CheckoutRequest) -> dict[str, Any]:
    """POST /wc/v3/orders body (mode "order"): a pending, unpaid order with our reference."""
    return {
        "status": "pending",
        "set_paid": False,
        "currency": req.cart.currency,
        "line_items": [{"product_id": int(pid), "quantity": qty} for pid, qty in _product_ids(req)],
        "meta_data": [{"key": settings.reference_meta_key, "value": req.reference}],
    }


def _meta(order: Mapping[str, Any], key: str) -> str | None:
    for item in order.get("meta_data") or []:
        if isinstance(item, Mapping) and item.get("key") == key and item.get("value") is not None:
            return str(item["value"])
    return None


def events_from_order(order: Mapping[str, Any], reference_key: str) -> list[PaymentEvent]:
    """The events one verified order webhook stands for (none, or one)."""
    order_id = order.get("id")
    reference = _meta(order, reference_key) or _meta(order, ATTRIBUTION_KEY)
    kind = _STATUS.get(str(order.get("status") or ""))
    if order_id is None or kind is None:
        log.info("woocommerce order %s is %r; no payment event", order_id, order.get("status"))
        return []
    if reference is None:
        # Still reported: the hub logs unmatched events, which shows a missing attribution.
        log.info("woocommerce order %s carries no hub reference", order_id)
    number = order.get("number")
    return [
        PaymentEvent(
            provider_event_id=f"order-{order_id}:{kind}",
            reference=reference,
            provider_ref=str(order_id),
            kind=kind,
            amount=money_from_text(order.get("total"), order.get("currency")),
            provider_order_id=str(number) if number is not None else None,
        )
    ]


def _error_text(status: int, body: object) -> str:
    # WP REST errors are {"code": "...", "message": "...", "data": {"status": N}}.
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return f"{body['message']} ({body.get('code', status)})"
    return f"HTTP {status}"


# --- the provider -----------------------------------------------------------------------------


class WooCommerceProvider:
    name = "woocommerce"

    def __init__(self, settings: WooCommerceSettings, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.http = http

    async def create_checkout(self, req: CheckoutRequest) -> CheckoutLink:
        if self.settings.mode == "link":
            # The order only exists once the customer checks out: no id yet.
            return CheckoutLink(url=add_to_cart_url(self.settings, req), provider_ref="")
        return await self._create_order(req)

    async def _create_order(self, req: CheckoutRequest) -> CheckoutLink:
        import aiohttp  # here, so the module's mapping stays importable without it

        s = self.settings
        url = f"{s.store_url}/wp-json/wc/v3/orders"
        # Basic auth over https is WooCommerce's documented way for REST keys; built by hand
        # because aiohttp deprecates BasicAuth.
        token = base64.b64encode(f"{s.consumer_key}:{s.consumer_secret}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        timeout = aiohttp.ClientTimeout(total=s.request_timeout_seconds)
        try:
            async with self.http.post(
                url, json=order_body(s, req), headers=headers, timeout=timeout
            ) as resp:
                status, retry_after = resp.status, resp.headers.get("Retry-After")
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ExternalError(
                _("WooCommerce did not answer; the link will be retried"),
                permanent=False,
                detail=f"POST {url}: {type(exc).__name__}: {exc}",
            ) from exc
        body = _json_or_none(raw)
        if status in (200, 201) and isinstance(body, Mapping) and body.get("payment_url"):
            log.info("woocommerce order %s created for %s", body.get("id"), req.reference)
            return CheckoutLink(url=str(body["payment_url"]), provider_ref=str(body.get("id", "")))
        raise _order_error(status, body, retry_after)

    async def parse_webhook(self, headers: Mapping[str, str], raw: bytes) -> list[PaymentEvent]:
        signature = header(headers, "X-WC-Webhook-Signature")
        if not signature:
            if _PING_RE.fullmatch(raw.strip()):
                log.info("woocommerce webhook ping (%s) answered", raw.strip().decode())
                return []
            raise WebhookRejected(401, "X-WC-Webhook-Signature is missing")
        if not hmac_sha256_base64_matches(self.settings.webhook_secret, raw, signature):
            raise WebhookRejected(403, "X-WC-Webhook-Signature does not match the body")
        topic = (header(headers, "X-WC-Webhook-Topic") or "").strip()
        if topic not in ORDER_TOPICS:
            log.info("woocommerce webhook topic %r ignored", topic)
            return []
        order = json_object(raw)
        log.info(
            "woocommerce %s delivery %s (webhook %s) for order %s",
            topic,
            header(headers, "X-WC-Webhook-Delivery-ID"),
            header(headers, "X-WC-Webhook-ID"),
            order.get("id"),
        )
        return events_from_order(order, self.settings.reference_meta_key)

    async def aclose(self) -> None:
        return None


def _json_or_none(raw: bytes) -> object:
    # An HTML error page from a proxy or a PHP fatal is not JSON; the status still tells.
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _order_error(status: int, body: object, retry_after: str | None) -> ExternalError:
    text = _error_text(status, body)
    detail = f"WooCommerce POST /orders answered {status}: {text}"
    if 200 <= status < 300:
        return ExternalError(
            _("WooCommerce created the order but sent no payment_url"),
            permanent=True,
            detail=detail,
        )
    if status in (401, 403):
        return ExternalError(
            _("WooCommerce refused the REST API keys (they need read/write access)"),
            permanent=True,
            detail=detail,
        )
    if status == 404:
        return ExternalError(
            _("WooCommerce's REST API was not found; check commerce.woocommerce.store_url"),
            permanent=True,
            detail=detail,
        )
    if status == 429 or status >= 500:
        try:
            after = float(retry_after) if retry_after else None
        except ValueError:
            after = None
        return ExternalError(
            _("WooCommerce is busy; the link will be retried"),
            permanent=False,
            retry_after=after,
            detail=detail,
        )
    return ExternalError(
        _("WooCommerce refused the order: {error}").format(error=text),
        permanent=True,
        detail=detail,
    )
