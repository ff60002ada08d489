"""Shopify: a cart permalink to the shop's own checkout, the order reported back by webhook.

Link (Shopify "Create cart permalinks"): ``https://SHOP/cart/VARIANT:QTY,VARIANT:QTY`` opens
the checkout with those variants. Query parameters carry what we need to recognise the order:
``attributes[hub_reference]=<reference>`` becomes a cart attribute, which Shopify copies to the
order's ``note_attributes``; ``ref=<value>`` (optional) shows up as the order's landing site ref
for the shop's own attribution. Prices, shipping and taxes are Shopify's, so the amount we
report is the order total Shopify charged, not our cart total.

Webhooks (topics orders/create, orders/paid, orders/updated, orders/cancelled): the body is the
REST Order; ``X-Shopify-Hmac-Sha256`` is base64(HMAC-SHA256(raw body, secret)), checked in
constant time before anything else is read. Mapping:
- ``cancelled_at`` set (or topic orders/cancelled) -> "cancelled";
- ``financial_status == "paid"`` -> "paid";
- anything else (pending bank transfer, authorized but not captured, partially paid) -> no
  event yet: orders/paid or orders/updated reports the payment when it happens.
Orders without our attribute are the shop's ordinary web orders and are ignored.

Dedupe: Shopify documents ``X-Shopify-Webhook-Id`` as the duplicate marker, but the same
payment reaches us through several topics (orders/create with "paid", then orders/paid, then
orders/updated) and once per subscription. The event id is therefore ``order-<id>:<kind>``:
every delivery saying "order 123 is paid" collapses into one event, whatever its topic.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

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
from hub.commerce.providers.settings import ShopifySettings
from hub.errors import ExternalError
from hub.i18n import _

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

ORDER_TOPICS = frozenset({"orders/create", "orders/paid", "orders/updated", "orders/cancelled"})
# Shopify variant ids are integers; catalogues exported from the Admin GraphQL API carry them
# as global ids ("gid://shopify/ProductVariant/123"), which we accept too.
_VARIANT_RE = re.compile(r"(?:gid://shopify/ProductVariant/)?([0-9]{1,20})")


def variant_number(variant_id: str | None) -> str | None:
    """The numeric variant id from "123" or "gid://shopify/ProductVariant/123", else None."""
    match = _VARIANT_RE.fullmatch((variant_id or "").strip())
    return match.group(1) if match else None


def cart_permalink(settings: ShopifySettings, req: CheckoutRequest) -> str:
    """The documented permalink; ExternalError (permanent) naming every line without variant."""
    require_items(req)
    items, missing = [], []
    for line in req.cart.lines:
        number = variant_number(line.variant_id)
        if number is None:
            missing.append(line.label())
        else:
            items.append(f"{number}:{line.quantity}")
    if missing:
        raise ExternalError(
            _(
                "Shopify needs a variant id for every product; missing (or not a Shopify variant "
                "id) for: {products}. Add variant_id to the catalogue."
            ).format(products=", ".join(missing)),
            permanent=True,
        )
    # Brackets stay literal as in Shopify's examples; keys and values are percent-encoded.
    query = [f"attributes[{quote(settings.reference_attribute)}]={quote(req.reference, safe='')}"]
    if settings.ref:
        query.append(f"ref={quote(settings.ref, safe='')}")
    return f"{settings.shop_url}/cart/{','.join(items)}?{'&'.join(query)}"


def _attribute(order: Mapping[str, Any], name: str) -> str | None:
    # note_attributes is a list of {"name", "value"}; some API versions and apps also send
    # an "attributes" mapping, so both are read.
    for item in order.get("note_attributes") or []:
        if isinstance(item, Mapping) and item.get("name") == name:
            value = item.get("value")
            return str(value) if value is not None else None
    attributes = order.get("attributes")
    if isinstance(attributes, Mapping) and attributes.get(name) is not None:
        return str(attributes[name])
    return None


def _kind(topic: str, order: Mapping[str, Any]) -> PaymentKind | None:
    if topic == "orders/cancelled" or order.get("cancelled_at"):
        return "cancelled"
    if order.get("financial_status") == "paid":
        return "paid"
    return None


def events_from_order(topic: str, order: Mapping[str, Any], attribute: str) -> list[PaymentEvent]:
    """The events one verified order webhook stands for (none, or one)."""
    reference = _attribute(order, attribute)
    order_id = order.get("id")
    if reference is None or order_id is None:
        log.debug("shopify %s for order %s is not from the hub; ignored", topic, order_id)
        return []
    kind = _kind(topic, order)
    if kind is None:
        status = order.get("financial_status")
        log.info("shopify order %s is %s; waiting for payment", order_id, status)
        return []
    name = order.get("name") or order.get("order_number")
    return [
        PaymentEvent(
            provider_event_id=f"order-{order_id}:{kind}",
            reference=reference,
            provider_ref=str(order_id),
            kind=kind,
            amount=money_from_text(order.get("total_price"), order.get("currency")),
            provider_order_id=str(name) if name is not None else None,
        )
    ]


# --- the provider -----------------------------------------------------------------------------


class ShopifyProvider:
    name = "shopify"

    def __init__(self, settings: ShopifySettings, http: aiohttp.ClientSession) -> None:
        # The permalink needs no API call; `http` is kept for the common constructor shape.
        self.settings = settings
        self.http = http

    async def create_checkout(self, req: CheckoutRequest) -> CheckoutLink:
        # Shopify creates its checkout only when the customer opens the link: no id yet.
        return CheckoutLink(url=cart_permalink(self.settings, req), provider_ref="")

    async def parse_webhook(self, headers: Mapping[str, str], raw: bytes) -> list[PaymentEvent]:
        signature = header(headers, "X-Shopify-Hmac-Sha256")
        if not signature:
            raise WebhookRejected(401, "X-Shopify-Hmac-Sha256 is missing")
        if not hmac_sha256_base64_matches(self.settings.webhook_secret, raw, signature):
            raise WebhookRejected(403, "X-Shopify-Hmac-Sha256 does not match the body")
        topic = (header(headers, "X-Shopify-Topic") or "").strip()
        if topic not in ORDER_TOPICS:
            log.info("shopify webhook topic %r ignored", topic)
            return []
        order = json_object(raw)
        log.info(
            "shopify %s delivery %s for order %s",
            topic,
            header(headers, "X-Shopify-Webhook-Id"),
            order.get("id"),
        )
        return events_from_order(topic, order, self.settings.reference_attribute)

    async def aclose(self) -> None:
        return None
