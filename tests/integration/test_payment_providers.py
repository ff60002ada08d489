"""Payment providers against loopback stand-ins of their APIs (no Synapse, no database).

Each provider creates a checkout against its stand-in (the exact request the API received is
asserted) and reads webhooks that the stand-ins sign like the real services, delivered over
HTTP to a tiny receiver that does what the hub's handler does: capped raw body ->
parse_webhook -> 200, or the status of WebhookRejected, or 503 for a ExternalError.
The built-in checkout's form validation and its two templates are tested here too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import AnyHttpUrl, BaseModel, SecretStr, ValidationError

from hub.commerce.cart import Cart
from hub.commerce.catalogue import Product
from hub.commerce.money import Money
from hub.commerce.providers import build_provider
from hub.commerce.providers.base import (
    CheckoutRequest,
    ExternalError,
    PaymentEvent,
    PaymentProvider,
    WebhookRejected,
)
from hub.commerce.providers.builtin import (
    BuiltinSettings,
    checkout_page_context,
    done_page_context,
    validate_checkout_form,
)
from hub.commerce.providers.mollie import MollieProvider, MollieSettings
from hub.commerce.providers.shopify import ShopifyProvider, ShopifySettings
from hub.commerce.providers.stripe_checkout import StripeProvider, StripeSettings
from hub.commerce.providers.woocommerce import WooCommerceProvider, WooCommerceSettings
from hub.http.pages import templates
from hub.net import read_body
from tests.standins.mollie import MollieStandin
from tests.standins.shop_webhooks import ShopifyWebhooks, WooCommerceStandin, WooWebhooks
from tests.standins.stripe import StripeStandin

REFERENCE = "hub-0123456789abcdef0123"
ROOT = Path(__file__).resolve().parents[2]
HUB = "https://hub.example"


def product(sku: str, price: Money, variant: str | None = None, rate: str = "19") -> Product:
    return Product(sku, f"Lasur <{sku}> “hell”", price, Decimal(rate), variant_id=variant)


def cart_of(*items: tuple[Product, int]) -> Cart:
    cart = Cart.empty(items[0][0].price.currency)
    for item, qty in items:
        cart = cart.add(item, qty, 99)
    return cart


EUR_CART = cart_of(
    (product("LA-1", Money(2490, "EUR"), "501"), 2),
    (product("PI-2", Money(450, "EUR"), "gid://shopify/ProductVariant/502", "7"), 1),
)  # total 54,30 €


def request_for(cart: Cart = EUR_CART, reference: str = REFERENCE) -> CheckoutRequest:
    return CheckoutRequest(
        order_id=42,
        order_number="0042",
        cart=cart,
        locale="de_DE",
        customer_name="Zoë Müller",
        success_url=f"{HUB}/checkout/{reference}/done",
        cancel_url=f"{HUB}/checkout/{reference}/cancelled",
        webhook_url=f"{HUB}/webhooks/payments/x",
        reference=reference,
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Receiver:
    """The hub's webhook handler in miniature, for one provider."""

    def __init__(self, provider: PaymentProvider) -> None:
        self.provider = provider
        self.events: list[list[PaymentEvent]] = []
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        raw = await read_body(request, 1_048_576)
        try:
            events = await self.provider.parse_webhook(request.headers, raw)
        except WebhookRejected as exc:
            return web.Response(status=exc.status, text=exc.reason)
        except ExternalError as exc:
            return web.Response(status=503, text=exc.human)
        self.events.append(events)
        return web.Response(text="ok")

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/webhooks/payments/{self.provider.name}"))


@pytest.fixture
async def receiver() -> AsyncIterator[Any]:
    started: list[Receiver] = []

    async def start(provider: PaymentProvider) -> Receiver:
        rec = Receiver(provider)
        app = web.Application()
        app.router.add_post("/webhooks/payments/{name}", rec.handle)
        rec.server = TestServer(app, host="127.0.0.1")
        await rec.server.start_server()
        started.append(rec)
        return rec

    yield start
    for rec in started:
        assert rec.server is not None
        await rec.server.close()


# --- Stripe ---------------------------------------------------------------------------------


@pytest.fixture
async def stripe_standin() -> AsyncIterator[StripeStandin]:
    s = StripeStandin()
    await s.start()
    yield s
    await s.stop()


def stripe_provider(standin: StripeStandin, http: aiohttp.ClientSession, **over: Any) -> Any:
    return StripeProvider(StripeSettings(**(standin.hub_config() | over)), http)


async def test_stripe_session_request_is_the_documented_one(
    stripe_standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    link = await stripe_provider(stripe_standin, http).create_checkout(request_for())
    [rec] = stripe_standin.created()
    assert rec.headers["Authorization"] == f"Bearer {stripe_standin.secret_key}"
    assert rec.headers["Idempotency-Key"] == f"hub-checkout-{REFERENCE}"
    assert rec.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    f = rec.form
    assert f["mode"] == "payment"
    assert f["line_items[0][price_data][currency]"] == "eur"
    assert f["line_items[0][price_data][unit_amount]"] == "2490"
    assert f["line_items[0][price_data][product_data][name]"] == "Lasur <LA-1> “hell”"
    assert f["line_items[0][price_data][product_data][metadata][sku]"] == "LA-1"
    assert f["line_items[0][quantity]"] == "2"
    assert f["line_items[1][price_data][unit_amount]"] == "450"
    assert f["line_items[1][quantity]"] == "1"
    assert f["success_url"] == f"{HUB}/checkout/{REFERENCE}/done"
    assert f["cancel_url"] == f"{HUB}/checkout/{REFERENCE}/cancelled"
    assert f["client_reference_id"] == REFERENCE
    assert f["metadata[reference]"] == REFERENCE
    assert f["metadata[order_number]"] == "0042"
    assert f["payment_intent_data[metadata][reference]"] == REFERENCE
    assert f["locale"] == "de"
    session = stripe_standin.sessions[link.provider_ref]
    assert link.url == session["url"]
    assert session["amount_total"] == 5430


async def test_stripe_retry_returns_the_same_session(
    stripe_standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    provider = stripe_provider(stripe_standin, http)
    first = await provider.create_checkout(request_for())
    again = await provider.create_checkout(request_for())
    assert again == first
    assert len(stripe_standin.sessions) == 1


@pytest.mark.parametrize(
    ("price", "sent"),
    [
        (Money(1500, "JPY"), "1500"),  # zero-decimal: whole yen
        (Money(1500, "ISK"), "150000"),  # ISO zero-decimal, Stripe two-decimal
        (Money(1250, "KWD"), "1250"),  # three-decimal, ends in 0
        (Money(1999, "USD"), "1999"),
    ],
)
async def test_stripe_amounts_in_stripes_units(
    stripe_standin: StripeStandin, http: aiohttp.ClientSession, price: Money, sent: str
) -> None:
    cart = cart_of((product("X-1", price), 3))
    link = await stripe_provider(stripe_standin, http).create_checkout(request_for(cart))
    [rec] = stripe_standin.created()
    assert rec.form["line_items[0][price_data][unit_amount]"] == sent
    assert rec.form["line_items[0][price_data][currency]"] == price.currency.lower()
    session = stripe_standin.sessions[link.provider_ref]
    event = stripe_standin.event(link.provider_ref)
    raw, headers = stripe_standin.delivery(event)
    [paid] = await stripe_provider(stripe_standin, http).parse_webhook(headers, raw)
    assert session["amount_total"] == int(sent) * 3
    assert paid.amount == price * 3


async def test_stripe_refuses_amounts_it_cannot_take(
    stripe_standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    cart = cart_of((product("X-1", Money(1255, "KWD")), 1))
    with pytest.raises(ExternalError) as caught:
        await stripe_provider(stripe_standin, http).create_checkout(request_for(cart))
    assert caught.value.permanent and "KWD" in caught.value.human
    assert stripe_standin.requests == []


@pytest.mark.parametrize(
    ("status", "kind", "permanent", "words"),
    [
        (400, "invalid_request_error", True, "Stripe refused the checkout: Bad currency"),
        (429, "invalid_request_error", False, "not reachable"),
        (500, "api_error", False, "not reachable"),
    ],
)
async def test_stripe_errors_are_classified(
    stripe_standin: StripeStandin,
    http: aiohttp.ClientSession,
    status: int,
    kind: str,
    permanent: bool,
    words: str,
) -> None:
    stripe_standin.fail_next(status, kind, "Bad currency")
    with pytest.raises(ExternalError) as caught:
        await stripe_provider(stripe_standin, http).create_checkout(request_for())
    assert caught.value.permanent is permanent
    assert words in caught.value.human


async def test_stripe_wrong_key_and_timeout(
    stripe_standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    wrong = stripe_provider(stripe_standin, http, secret_key="sk_test_" + "0" * 24)
    with pytest.raises(ExternalError) as caught:
        await wrong.create_checkout(request_for())
    assert caught.value.permanent and "API key" in caught.value.human
    assert "sk_test_" not in caught.value.human + caught.value.detail
    stripe_standin.delay_seconds = 2
    slow = stripe_provider(stripe_standin, http, request_timeout_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(ExternalError) as caught:
        await slow.create_checkout(request_for())
    assert not caught.value.permanent
    assert time.monotonic() - started < 1.5


async def test_stripe_webhook_over_http(
    stripe_standin: StripeStandin, http: aiohttp.ClientSession, receiver: Any
) -> None:
    provider = stripe_provider(stripe_standin, http)
    link = await provider.create_checkout(request_for())
    hub = await receiver(provider)
    event = stripe_standin.event(link.provider_ref)
    assert await stripe_standin.post_event(hub.url, event) == (200, "ok")
    assert await stripe_standin.post_event(hub.url, event) == (200, "ok")  # redelivery
    first, second = hub.events
    assert first == second
    [paid] = first
    assert paid == PaymentEvent(
        provider_event_id=event["id"],
        reference=REFERENCE,
        provider_ref=link.provider_ref,
        kind="paid",
        amount=Money(5430, "EUR"),
    )


async def test_stripe_webhook_signature_is_checked(
    stripe_standin: StripeStandin, http: aiohttp.ClientSession, receiver: Any
) -> None:
    provider = stripe_provider(stripe_standin, http)
    link = await provider.create_checkout(request_for())
    hub = await receiver(provider)
    event = stripe_standin.event(link.provider_ref)
    raw, _ = stripe_standin.delivery(event)
    other = stripe_standin.sign(raw, secret="whsec_" + "f" * 48)
    stale = int(time.time()) - 3600
    cases: list[tuple[dict[str, Any], int]] = [
        ({"signature": None}, 401),
        ({"signature": other}, 403),
        ({"signature": "t=1,v1=00"}, 403),
        ({"signature": "nonsense"}, 403),
        ({"timestamp": stale}, 403),
    ]
    for kwargs, status in cases:
        got, _ = await stripe_standin.post_event(hub.url, event, **kwargs)
        assert got == status, kwargs
    tampered = raw.replace(b'"paid"', b'"unpaid"')
    _, headers = stripe_standin.delivery(event)
    with pytest.raises(WebhookRejected) as caught:
        await provider.parse_webhook(headers, tampered)
    assert caught.value.status == 403
    assert hub.events == []


@pytest.mark.parametrize(
    ("event_type", "payment_status", "kind"),
    [
        ("checkout.session.completed", "unpaid", None),  # delayed method: wait
        ("checkout.session.async_payment_succeeded", "paid", "paid"),
        ("checkout.session.async_payment_failed", "unpaid", "failed"),
        ("checkout.session.expired", "unpaid", "expired"),
        ("customer.created", "unpaid", None),
    ],
)
async def test_stripe_event_kinds(
    stripe_standin: StripeStandin,
    http: aiohttp.ClientSession,
    event_type: str,
    payment_status: str,
    kind: str | None,
) -> None:
    provider = stripe_provider(stripe_standin, http)
    link = await provider.create_checkout(request_for())
    event = stripe_standin.event(link.provider_ref, event_type)
    event["data"]["object"]["payment_status"] = payment_status
    if event_type == "customer.created":
        event["data"]["object"] = {"id": "cus_1", "object": "customer"}
    raw, headers = stripe_standin.delivery(event)
    events = await provider.parse_webhook(headers, raw)
    assert [e.kind for e in events] == ([kind] if kind else [])


# --- Mollie ---------------------------------------------------------------------------------


@pytest.fixture
async def mollie_standin() -> AsyncIterator[MollieStandin]:
    s = MollieStandin()
    await s.start()
    yield s
    await s.stop()


def mollie_provider(standin: MollieStandin, http: aiohttp.ClientSession, **over: Any) -> Any:
    return MollieProvider(MollieSettings(**(standin.hub_config() | over)), http)


async def test_mollie_payment_request_is_the_documented_one(
    mollie_standin: MollieStandin, http: aiohttp.ClientSession
) -> None:
    provider = mollie_provider(mollie_standin, http)
    try:
        link = await provider.create_checkout(request_for())
        again = await provider.create_checkout(request_for())  # an outbox retry
    finally:
        await provider.aclose()
    first = mollie_standin.requests[0]
    assert first.json == {
        "amount": {"currency": "EUR", "value": "54.30"},
        "description": "Order 0042",
        "redirectUrl": f"{HUB}/checkout/{REFERENCE}/done",
        "cancelUrl": f"{HUB}/checkout/{REFERENCE}/cancelled",
        "webhookUrl": f"{HUB}/webhooks/payments/x",
        "metadata": {"reference": REFERENCE, "order_id": 42, "order_number": "0042"},
    }
    assert first.headers["Authorization"] == f"Bearer {mollie_standin.api_key}"
    assert first.headers["Idempotency-Key"] == f"hub-checkout-{REFERENCE}"
    payment = mollie_standin.payments[link.provider_ref]
    assert link.url == payment["_links"]["checkout"]["href"]
    assert again == link and len(mollie_standin.payments) == 1


@pytest.mark.parametrize(
    ("price", "value"), [(Money(1500, "JPY"), "4500"), (Money(1255, "KWD"), "3.765")]
)
async def test_mollie_amount_has_the_currencys_decimals(
    mollie_standin: MollieStandin, http: aiohttp.ClientSession, price: Money, value: str
) -> None:
    provider = mollie_provider(mollie_standin, http)
    try:
        await provider.create_checkout(request_for(cart_of((product("X", price), 3))))
    finally:
        await provider.aclose()
    [rec] = mollie_standin.created()
    assert rec.json["amount"] == {"currency": price.currency, "value": value}


@pytest.mark.parametrize(
    ("status", "permanent"), [(422, True), (503, False), (429, False), (404, True)]
)
async def test_mollie_errors_are_classified(
    mollie_standin: MollieStandin, http: aiohttp.ClientSession, status: int, permanent: bool
) -> None:
    mollie_standin.fail_next(status, "The amount is higher than the maximum")
    provider = mollie_provider(mollie_standin, http)
    try:
        with pytest.raises(ExternalError) as caught:
            await provider.create_checkout(request_for())
    finally:
        await provider.aclose()
    assert caught.value.permanent is permanent
    if status == 422:
        assert "higher than the maximum" in caught.value.human


async def test_mollie_wrong_key_and_timeout(
    mollie_standin: MollieStandin, http: aiohttp.ClientSession
) -> None:
    wrong = mollie_provider(mollie_standin, http, api_key="test_" + "x" * 30)
    slow = mollie_provider(mollie_standin, http, request_timeout_seconds=0.3)
    try:
        with pytest.raises(ExternalError) as caught:
            await wrong.create_checkout(request_for())
        assert caught.value.permanent and "API key" in caught.value.human
        assert "test_xxx" not in caught.value.human + caught.value.detail
        mollie_standin.delay_seconds = 1.5
        started = time.monotonic()
        with pytest.raises(ExternalError) as caught:
            await slow.create_checkout(request_for())
        assert not caught.value.permanent
        assert time.monotonic() - started < 1.4
    finally:
        await wrong.aclose()
        await slow.aclose()


async def test_mollie_webhook_fetches_the_status(
    mollie_standin: MollieStandin, http: aiohttp.ClientSession, receiver: Any
) -> None:
    provider = mollie_provider(mollie_standin, http)
    try:
        link = await provider.create_checkout(request_for())
        hub = await receiver(provider)
        pid = link.provider_ref
        assert await mollie_standin.call_webhook(pid, hub.url) == (200, "ok")  # still open
        mollie_standin.set_status(pid, "paid")
        assert await mollie_standin.call_webhook(pid, hub.url) == (200, "ok")
        assert await mollie_standin.call_webhook(pid, hub.url) == (200, "ok")  # again
        assert hub.events[0] == []
        assert (
            hub.events[1]
            == hub.events[2]
            == [PaymentEvent(f"{pid}:paid", REFERENCE, pid, "paid", Money(5430, "EUR"))]
        )
        gets = [r for r in mollie_standin.requests if r.method == "GET"]
        assert len(gets) == 3 and gets[0].path == f"/v2/payments/{pid}"
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("status", "kind"),
    [("canceled", "cancelled"), ("expired", "expired"), ("failed", "failed"), ("pending", None)],
)
async def test_mollie_status_mapping(
    mollie_standin: MollieStandin, http: aiohttp.ClientSession, status: str, kind: str | None
) -> None:
    provider = mollie_provider(mollie_standin, http)
    try:
        link = await provider.create_checkout(request_for())
        mollie_standin.set_status(link.provider_ref, status)
        events = await provider.parse_webhook({}, f"id={link.provider_ref}".encode())
    finally:
        await provider.aclose()
    assert [(e.kind, e.provider_event_id) for e in events] == (
        [(kind, f"{link.provider_ref}:{status}")] if kind else []
    )


async def test_mollie_webhook_refusals(
    mollie_standin: MollieStandin, http: aiohttp.ClientSession, receiver: Any
) -> None:
    provider = mollie_provider(mollie_standin, http)
    try:
        link = await provider.create_checkout(request_for())
        hub = await receiver(provider)
        for body in (b"", b"id=", b"id=tr_a&id=tr_b", b"id=cs_123", b"\xff\xfe"):
            async with http.post(hub.url, data=body) as resp:
                assert resp.status == 400, body
        async with http.post(hub.url, data={"id": "tr_unknownpay"}) as resp:
            assert resp.status == 400  # Mollie does not know it: a made-up call
        mollie_standin.fail_next(503, method="GET")
        status, _ = await mollie_standin.call_webhook(link.provider_ref, hub.url)
        assert status == 503  # transient: Mollie calls again later
        assert hub.events == []
    finally:
        await provider.aclose()


# --- Shopify --------------------------------------------------------------------------------

SHOP = ShopifyWebhooks()


def shopify(**over: Any) -> ShopifyProvider:
    values = {"shop_url": "https://hub-test.myshopify.com/", "webhook_secret": SHOP.secret}
    return ShopifyProvider(ShopifySettings(**(values | over)), None)  # type: ignore[arg-type]


async def test_shopify_cart_permalink() -> None:
    link = await shopify(ref="matrixhub").create_checkout(request_for())
    assert link.url == (
        "https://hub-test.myshopify.com/cart/501:2,502:1"
        f"?attributes[hub_reference]={REFERENCE}&ref=matrixhub"
    )
    assert link.provider_ref == ""


async def test_shopify_refuses_lines_without_variant() -> None:
    cart = cart_of(
        (product("LA-1", Money(2490, "EUR"), "501"), 1),
        (product("NO-VAR", Money(100, "EUR")), 1),
        (product("BAD-VAR", Money(100, "EUR"), "blue-42"), 1),
    )
    with pytest.raises(ExternalError) as caught:
        await shopify().create_checkout(request_for(cart))
    assert caught.value.permanent
    assert "NO-VAR" in caught.value.human and "BAD-VAR" in caught.value.human
    assert "LA-1" not in caught.value.human


async def test_shopify_order_webhooks(receiver: Any) -> None:
    hub = await receiver(shopify())
    paid = SHOP.order(reference=REFERENCE, total="54.30")
    assert await SHOP.send(hub.url, paid) == (200, "ok")
    assert await SHOP.send(hub.url, paid, topic="orders/paid") == (200, "ok")  # same payment
    [[first], [second]] = hub.events
    assert (
        first
        == second
        == PaymentEvent(
            provider_event_id=f"order-{paid['id']}:paid",
            reference=REFERENCE,
            provider_ref=str(paid["id"]),
            kind="paid",
            amount=Money(5430, "EUR"),
            provider_order_id=paid["name"],
        )
    )


@pytest.mark.parametrize(
    ("order", "topic", "kinds"),
    [
        (SHOP.order(reference=REFERENCE, financial_status="pending"), "orders/create", []),
        (SHOP.order(reference=REFERENCE, financial_status="authorized"), "orders/create", []),
        (SHOP.order(reference=REFERENCE, cancelled=True), "orders/cancelled", ["cancelled"]),
        (SHOP.order(reference=None), "orders/create", []),  # an ordinary web order
        (SHOP.order(reference=REFERENCE), "products/update", []),
        (SHOP.order(reference=REFERENCE, total="1500.00", currency="JPY"), "orders/paid", ["paid"]),
    ],
)
async def test_shopify_order_mapping(order: dict, topic: str, kinds: list[str]) -> None:
    raw, headers = SHOP.delivery(order, topic)
    events = await shopify().parse_webhook(headers, raw)
    assert [e.kind for e in events] == kinds
    if order["currency"] == "JPY":
        assert events[0].amount == Money(1500, "JPY")


async def test_shopify_signature_is_checked(receiver: Any) -> None:
    hub = await receiver(shopify())
    order = SHOP.order(reference=REFERENCE)
    assert (await SHOP.send(hub.url, order, signature=None))[0] == 401
    assert (await SHOP.send(hub.url, order, signature="AAAA"))[0] == 403
    assert (await SHOP.send(hub.url, order, signature="not base64!"))[0] == 403
    forged = ShopifyWebhooks(secret="another-secret-of-some-length")
    assert (await forged.send(hub.url, order))[0] == 403
    raw, headers = SHOP.delivery(order)
    with pytest.raises(WebhookRejected) as caught:
        await shopify().parse_webhook(headers, raw.replace(b"54.30", b"0.01"))
    assert caught.value.status == 403
    assert hub.events == []


# --- WooCommerce ----------------------------------------------------------------------------

WOO = WooWebhooks()


def woo(**over: Any) -> WooCommerceProvider:
    values = {"store_url": "https://shop.example/", "webhook_secret": WOO.secret}
    return WooCommerceProvider(WooCommerceSettings(**(values | over)), None)  # type: ignore[arg-type]


async def test_woocommerce_add_to_cart_link() -> None:
    single = cart_of((product("LA-1", Money(2490, "EUR"), "501"), 2))
    link = await woo().create_checkout(request_for(single))
    assert link.url == (
        "https://shop.example/cart/?add-to-cart=501&quantity=2"
        f"&utm_source=matrix-hub&utm_medium=chat&utm_content={REFERENCE}"
    )
    two = cart_of(
        (product("LA-1", Money(2490, "EUR"), "501"), 2),
        (product("PI-2", Money(450, "EUR"), "502"), 1),
    )
    with pytest.raises(ExternalError) as caught:
        await woo().create_checkout(request_for(two))
    assert caught.value.permanent and "one product" in caught.value.human
    multi = await woo(multi_product_links=True).create_checkout(request_for(two))
    assert "?add-to-cart=501:2,502:1&utm_source=" in multi.url
    with pytest.raises(ExternalError) as caught:
        await woo().create_checkout(request_for(EUR_CART))  # "gid://..." is no Woo id
    assert "PI-2" in caught.value.human


@pytest.fixture
async def woo_standin() -> AsyncIterator[WooCommerceStandin]:
    s = WooCommerceStandin()
    s.products = {501: Decimal("24.90"), 502: Decimal("4.50")}
    await s.start()
    yield s
    await s.stop()


async def test_woocommerce_order_mode(
    woo_standin: WooCommerceStandin, http: aiohttp.ClientSession, receiver: Any
) -> None:
    provider = WooCommerceProvider(WooCommerceSettings(**woo_standin.hub_config()), http)
    two = cart_of(
        (product("LA-1", Money(2490, "EUR"), "501"), 2),
        (product("PI-2", Money(450, "EUR"), "502"), 1),
    )
    link = await provider.create_checkout(request_for(two))
    [rec] = woo_standin.requests
    assert rec.json == {
        "status": "pending",
        "set_paid": False,
        "currency": "EUR",
        "line_items": [{"product_id": 501, "quantity": 2}, {"product_id": 502, "quantity": 1}],
        "meta_data": [{"key": "hub_reference", "value": REFERENCE}],
    }
    order = woo_standin.orders[int(link.provider_ref)]
    assert link.url == order["payment_url"] and "pay_for_order=true" in link.url
    hub = await receiver(provider)
    payload = woo_standin.webhook_payload(int(link.provider_ref), "processing")
    assert await woo_standin.webhooks.send(hub.url, payload) == (200, "ok")
    [[paid]] = hub.events
    assert (paid.kind, paid.reference, paid.amount) == ("paid", REFERENCE, Money(5430, "EUR"))


@pytest.mark.parametrize(
    ("fail", "permanent"), [(401, True), (500, False), (429, False), (404, True)]
)
async def test_woocommerce_order_errors(
    woo_standin: WooCommerceStandin, http: aiohttp.ClientSession, fail: int, permanent: bool
) -> None:
    woo_standin.fail_status.append(fail)
    provider = WooCommerceProvider(WooCommerceSettings(**woo_standin.hub_config()), http)
    with pytest.raises(ExternalError) as caught:
        await provider.create_checkout(
            request_for(cart_of((product("A", Money(1, "EUR"), "501"), 1)))
        )
    assert caught.value.permanent is permanent
    unknown = cart_of((product("GONE", Money(100, "EUR"), "999"), 1))
    with pytest.raises(ExternalError) as caught:
        await provider.create_checkout(request_for(unknown))
    assert caught.value.permanent and "Invalid product ID" in caught.value.human


@pytest.mark.parametrize(
    ("status", "meta", "kind", "reference"),
    [
        ("processing", {"hub_reference": REFERENCE}, "paid", REFERENCE),
        ("completed", {"_wc_order_attribution_utm_content": REFERENCE}, "paid", REFERENCE),
        ("cancelled", {"hub_reference": REFERENCE}, "cancelled", REFERENCE),
        ("failed", {"hub_reference": REFERENCE}, "failed", REFERENCE),
        ("on-hold", {"hub_reference": REFERENCE}, None, None),  # bank transfer not in yet
        ("pending", {}, None, None),
        ("processing", {}, "paid", None),  # paid, but not from the hub (logged, unmatched)
    ],
)
async def test_woocommerce_order_mapping(
    status: str, meta: dict, kind: str | None, reference: str | None
) -> None:
    order = WOO.order(status=status, meta=meta)
    raw, headers = WOO.delivery(order)
    events = await woo().parse_webhook(headers, raw)
    assert [(e.kind, e.reference) for e in events] == ([(kind, reference)] if kind else [])
    if kind:
        assert events[0].provider_event_id == f"order-4750:{kind}"
        assert events[0].provider_order_id == "4750"


async def test_woocommerce_webhook_signature_and_ping(receiver: Any) -> None:
    hub = await receiver(woo())
    order = WOO.order(meta={"hub_reference": REFERENCE})
    assert await WOO.send_ping(hub.url) == (200, "ok")  # saving the webhook must succeed
    assert (await WOO.send(hub.url, order, signature=None))[0] == 401
    assert (await WOO.send(hub.url, order, signature="Zm9yZ2Vk"))[0] == 403
    assert (await WooWebhooks(secret="x" * 20).send(hub.url, order))[0] == 403
    assert await WOO.send(hub.url, order, topic="product.updated") == (200, "ok")
    assert await WOO.send(hub.url, order) == (200, "ok")
    assert await WOO.send(hub.url, order, topic="order.created") == (200, "ok")
    ping, other_topic, updated, created = hub.events
    assert ping == other_topic == []
    assert updated == created and len(updated) == 1  # new delivery id, same event id


# --- builtin --------------------------------------------------------------------------------

GOOD = {
    "name": "Zoë Ødegård-Łukasiewicz",
    "street": "Hauptstraße 5a",
    "postcode": "１０１１５",  # full-width digits from a Japanese keyboard
    "city": "Berlin",
    "country": "de",
    "email": "Zoe@Bücher.Example",
    "phone": "+49 (30) 123 45-67",
    "payment_method": "prepayment",
    "csrf": "ignored",
}


def test_builtin_form_accepts_and_cleans() -> None:
    details, errors = validate_checkout_form(GOOD, ["invoice", "prepayment"])
    assert errors == {}
    assert details is not None
    assert details.as_dict() == {
        "name": "Zoë Ødegård-Łukasiewicz",
        "street": "Hauptstraße 5a",
        "postcode": "10115",
        "city": "Berlin",
        "country": "DE",
        "email": "Zoe@bücher.example",
        "phone": "+49 (30) 123 45-67",
        "payment_method": "prepayment",
    }


@pytest.mark.parametrize(
    "name", ["محمد بن سلمان", "山田 太郎", "José  María\u00a0O’Neill", "نرگس\u200cها", "Nguyễn Thị"]
)
def test_builtin_form_takes_names_from_everywhere(name: str) -> None:
    details, errors = validate_checkout_form(GOOD | {"name": name}, ["prepayment"])
    assert errors == {} and details is not None
    assert details.name == " ".join(name.split())


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        (
            {"name": "", "street": "  ", "city": ""},
            {"name": "required", "street": "required", "city": "required"},
        ),
        ({"name": "Anna 😀"}, {"name": "invalid"}),
        ({"name": "Anna\x00Bell"}, {"name": "invalid"}),
        ({"name": "A"}, {"name": "too_short"}),
        ({"name": "x" * 101}, {"name": "too_long"}),
        ({"street": "12345"}, {"street": "invalid"}),
        ({"postcode": "1234"}, {"postcode": "invalid_postcode"}),
        ({"country": "nl", "postcode": "1234 ab"}, {}),
        ({"country": "GB", "postcode": "sw1a 1aa"}, {}),
        ({"country": "XX"}, {"country": "unknown_choice"}),
        ({"country": ""}, {"country": "required"}),
        ({"email": "not-an-address"}, {"email": "invalid_email"}),
        ({"email": ""}, {}),
        ({"phone": "call me"}, {"phone": "invalid_phone"}),
        ({"phone": "+49 1234567890123456"}, {"phone": "invalid_phone"}),
        ({"payment_method": "invoice"}, {"payment_method": "unknown_choice"}),
        ({"payment_method": ""}, {"payment_method": "required"}),
    ],
)
def test_builtin_form_errors(changes: dict[str, str], errors: dict[str, str]) -> None:
    details, got = validate_checkout_form(GOOD | changes, ["prepayment"])
    assert got == errors
    assert (details is None) is bool(errors)


def test_builtin_form_limits_countries_when_asked() -> None:
    _, errors = validate_checkout_form(
        GOOD | {"country": "FR", "postcode": "75001"}, ["prepayment"], countries=["DE", "AT"]
    )
    assert errors == {"country": "country_not_offered"}  # a country, but not one offered
    _, errors = validate_checkout_form(GOOD | {"country": "XX"}, ["prepayment"], countries=["DE"])
    assert errors == {"country": "unknown_choice"}  # no country at all
    details, errors = validate_checkout_form(
        GOOD | {"country": "at", "postcode": "1010"}, ["prepayment"], countries=["DE", "AT"]
    )
    assert errors == {} and details is not None and details.country == "AT"


def test_the_page_and_the_server_offer_the_same_countries() -> None:
    from hub.commerce.providers.builtin import DEFAULT_COUNTRIES, offered_countries

    settings = BuiltinSettings(public_base_url="https://hub.example", countries=["de", "LI"])
    context = checkout_page_context(
        cart=EUR_CART, locale="de_DE", order_number="1", methods=["invoice"], settings=settings
    )
    assert [code for code, _name in context["countries"]] == offered_countries(settings)
    assert offered_countries(settings) == ["DE", "LI"]
    assert offered_countries(None) == list(DEFAULT_COUNTRIES)
    assert "country_not_offered" in context["error_texts"]


def test_builtin_settings_accept_country_codes_and_refuse_groupings() -> None:
    settings = BuiltinSettings(public_base_url="https://hub.example", countries=["de", "AT", "LI"])
    assert settings.countries == ["DE", "AT", "LI"]
    for bad in (["DE", "EU"], ["UN"], ["XX"], ["DEU"]):
        with pytest.raises(ValidationError, match="not ISO country codes"):
            BuiltinSettings(public_base_url="https://hub.example", countries=bad)


async def test_builtin_provider() -> None:
    settings = BuiltinSettings(public_base_url="https://hub.example/")
    provider = build_provider("builtin", {}, None, public_base_url="https://hub.example/")  # type: ignore[arg-type]
    assert isinstance(provider, PaymentProvider)
    link = await provider.create_checkout(request_for())
    assert link.url == f"https://hub.example/checkout/{REFERENCE}"
    with pytest.raises(ExternalError):
        await provider.create_checkout(request_for(replace(EUR_CART, lines=())))
    with pytest.raises(WebhookRejected) as caught:
        await provider.parse_webhook({}, b"{}")
    assert caught.value.status == 400
    assert settings.payment_methods == ["invoice", "prepayment"]


def _settings() -> BuiltinSettings:
    return BuiltinSettings(
        public_base_url=HUB,
        prepayment_instructions="IBAN DE02 1203 0000 0000 2020 51\n<b>Reference</b>: order number",
    )


async def test_checkout_template_renders_and_escapes(
    shop_language: Callable[[str], None],
) -> None:
    shop_language("de_DE")  # the words of the shop's language, the amounts of its locale
    context = checkout_page_context(
        cart=EUR_CART,
        locale="de_DE",
        order_number="0042",
        methods=["invoice", "prepayment"],
        settings=_settings(),
    )
    page = (
        await templates()
        .get_template("checkout.html")
        .render_async(
            shop_name="Farben & <Co>",
            csrf="csrf-token-1",
            form={"name": '"><script>alert(1)</script>', "country": "AT"},
            errors={"name": "invalid", "payment_method": "required"},
            **context,
        )
    )
    assert '<html lang="de">' in page
    assert "Farben &amp; &lt;Co&gt;" in page
    assert "Lasur &lt;LA-1&gt; “hell”" in page and "<LA-1>" not in page
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    assert "<script" not in page
    assert '<input type="hidden" name="csrf" value="csrf-token-1">' in page
    assert "54,30\u00a0€" in page and "je 24,90\u00a0€" in page
    assert (
        "inkl. 19\u00a0% MwSt.: 7,95\u00a0€" in page and "inkl. 7\u00a0% MwSt.: 0,29\u00a0€" in page
    )
    assert 'aria-invalid="true" aria-describedby="error-name"' in page
    assert "Bitte prüfen Sie diese Angabe." in page
    assert '<option value="AT" selected>Österreich</option>' in page
    assert "&lt;b&gt;Reference&lt;/b&gt;" in page
    assert 'autocomplete="postal-code"' in page and 'for="field-postcode"' in page
    # No external resources: nothing is loaded from anywhere.
    assert "http://" not in page and "https://" not in page and " src=" not in page


async def test_checkout_done_template(shop_language: Callable[[str], None]) -> None:
    values = {
        "shop_name": "Farben & Co",
        "order_number": "0042",
        "amount": "54,30 €",
        "instructions": _settings().prepayment_instructions,
    }
    env = templates()
    shop_language("de_DE")
    placed = await env.get_template("checkout_done.html").render_async(
        status="pending",
        payment_method="prepayment",
        **values,
        **done_page_context(locale="de_DE", payment_method="prepayment"),
    )
    assert '<html lang="de">' in placed
    assert "Vielen Dank für Ihre Bestellung" in placed
    assert "Ihre Bestellung ist eingegangen." in placed
    assert "Vorkasse (Überweisung)" in placed
    assert "IBAN DE02 1203 0000 0000 2020 51\n&lt;b&gt;Reference&lt;/b&gt;" in placed
    # A language the hub has no texts in: English words.
    shop_language("fr_FR")
    paid = await env.get_template("checkout_done.html").render_async(
        status="paid",
        payment_method=None,
        **values,
        **done_page_context(locale="fr_FR", payment_method=None),
    )
    assert '<html lang="en">' in paid
    assert "We have received your payment." in paid and "How to pay" not in paid
    shop_language("en_GB")
    cancelled = await env.get_template("checkout_done.html").render_async(
        status="pending",
        payment_method=None,
        outcome="cancelled",
        **values,
        **done_page_context(locale="en_GB", payment_method=None),
    )
    assert "The payment was cancelled." in cancelled and "IBAN" not in cancelled


# --- all providers --------------------------------------------------------------------------


def test_settings_never_show_secrets() -> None:
    stripe_settings = StripeSettings(
        secret_key="sk_test_" + "s" * 20, webhook_secret="whsec_" + "w" * 20
    )
    mollie_settings = MollieSettings(api_key="test_" + "m" * 20)
    woo_settings = WooCommerceSettings(
        store_url="https://shop.example",
        webhook_secret="v" * 20,
        mode="order",
        consumer_key="ck_" + "k" * 20,
        consumer_secret="cs_" + "c" * 20,
    )
    shop_settings = ShopifySettings(shop_url="https://a.myshopify.com", webhook_secret="h" * 20)
    for settings in (stripe_settings, mollie_settings, woo_settings, shop_settings):
        text = repr(settings) + str(settings)
        assert not any(s * 20 in text for s in "swmkcvh"), text
    with pytest.raises(ValueError):
        WooCommerceSettings(store_url="https://shop.example", webhook_secret="v" * 20, mode="order")


def test_every_provider_fits_the_protocol() -> None:
    no_http: Any = None  # never used: nothing is sent
    stripe_keys = {"secret_key": "sk_test_" + "1" * 20, "webhook_secret": "whsec_" + "2" * 20}
    for provider in (
        shopify(),
        woo(),
        build_provider("stripe", stripe_keys, no_http),
        build_provider("mollie", {"api_key": "test_" + "3" * 20}, no_http),
    ):
        assert isinstance(provider, PaymentProvider), provider
    assert json.loads(json.dumps(request_for().cart.to_json()))["total_minor"] == 5430


def test_mapping_modules_import_no_io_libraries() -> None:
    # DESIGN.md "Pure vs I/O": the payload mapping needs no aiohttp (only Stripe's SDK, which
    # brings its own, is exempt: its module also holds the SDK calls).
    names = ["base", "builtin", "shopify", "woocommerce", "mollie"]
    code = (
        "import sys\n"
        + "".join(f"import hub.commerce.providers.{n}\n" for n in names)
        + "print(','.join(m for m in sys.modules if m.split('.')[0] in "
        + "('aiohttp', 'nio', 'sqlalchemy')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


async def test_build_provider_takes_a_config_section() -> None:
    # The hub's config sections may use URL and secret types; the provider gets plain text.
    class Section(BaseModel):
        store_url: AnyHttpUrl
        webhook_secret: SecretStr

    section = Section(store_url="https://shop.example", webhook_secret="s" * 20)  # type: ignore[arg-type]
    provider: Any = build_provider("woocommerce", section, None)  # type: ignore[arg-type]
    assert provider.settings.store_url == "https://shop.example"
    assert provider.settings.webhook_secret == "s" * 20
    with pytest.raises(ValidationError):
        build_provider("woocommerce", {"store_url": "ftp://x"}, None)  # type: ignore[arg-type]
