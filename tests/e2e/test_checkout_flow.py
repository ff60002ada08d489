"""From cart to paid order with every payment provider, on the real Synapse: the customer gets
the checkout link (a counted short link), pays at the provider's loopback stand-in, the signed
webhook marks the order paid (once, however often it is redelivered, and never when forged),
and the customer is thanked and kept posted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import yaml

from tests.e2e.conftest import Stack
from tests.e2e.helpers import Adviser, Visitor, open_portal
from tests.e2e.test_commerce_cart import command
from tests.standins.mollie import MollieStandin
from tests.standins.shop_webhooks import ShopifyWebhooks, WooCommerceStandin
from tests.standins.stripe import StripeStandin

pytestmark = pytest.mark.e2e

AMOUNT = "119,80\u00a0€"  # 2 × WF-W-10 at 59,90 €


class Providers:
    def __init__(self) -> None:
        self.stripe = StripeStandin()
        self.mollie = MollieStandin()
        self.woo = WooCommerceStandin()
        self.shopify = ShopifyWebhooks()
        self.woo.products[41230987001] = Decimal("59.90")  # WF-W-10's variant

    async def start(self) -> None:
        for s in (self.stripe, self.mollie, self.woo):
            await s.start()

    async def stop(self) -> None:
        for s in (self.stripe, self.mollie, self.woo):
            await s.stop()

    def section(self, name: str) -> dict[str, Any]:
        if name == "stripe":
            return self.stripe.hub_config()
        if name == "mollie":
            return self.mollie.hub_config()
        if name == "woocommerce":
            return self.woo.hub_config(mode="order")
        return {"shop_url": "https://hub-test.myshopify.com", "webhook_secret": self.shopify.secret}


@pytest.fixture(scope="module")
async def providers(stack: Stack) -> AsyncIterator[Providers]:
    p = Providers()
    await p.start()
    original = stack.config_path.read_text()
    yield p
    stack.config_path.write_text(original)
    await stack.hub.stop()
    await stack.hub.start()
    await p.stop()


async def use_provider(stack: Stack, providers: Providers, name: str) -> None:
    config = yaml.safe_load(stack.config_path.read_text())
    config["commerce"]["provider"] = name
    if name != "builtin":
        config["commerce"][name] = providers.section(name)
    stack.config_path.write_text(yaml.safe_dump(config))
    await stack.hub.stop()
    await stack.hub.start()


async def pay_and_follow_link(
    stack: Stack, adviser: Adviser, visitor: Visitor, name: str
) -> tuple[str, str, str]:
    """Cart, !pay, the link reaches the customer; returns (room, short link, target URL)."""
    room_id = await open_portal(adviser, visitor, name, "Ich möchte bestellen")
    assert (await command(stack, adviser, room_id, "!cart add WF-W-10 2"))[0] == "✅"
    key, body = await command(stack, adviser, room_id, "!pay")
    assert key == "✅" and AMOUNT in body
    link_msg = await visitor.wait_message(
        lambda m: m["direction"] == "out" and "/l/" in (m["text"] or "")
    )
    assert AMOUNT in link_msg["text"]
    short = next(w for w in link_msg["text"].split() if "/l/" in w)
    await adviser.wait_event(
        room_id, lambda e: "Bezahllink für Bestellung" in e.get("content", {}).get("body", "")
    )
    async with visitor.http.get(short, allow_redirects=False) as resp:
        assert resp.status == 302
        target = resp.headers["Location"]
    return room_id, short, target


def shop_text(msgid: str, **values: str) -> str:
    """A text as the hub (a German shop) writes it: from the same catalogues."""
    from hub import i18n

    i18n.set_locale("de_DE")
    try:
        return i18n._(msgid).format(**values)
    finally:
        i18n.set_locale("en")


async def expect_paid_once(stack: Stack, adviser: Adviser, visitor: Visitor, room_id: str) -> None:
    thanks = await visitor.wait_message(
        lambda m: m["direction"] == "out" and "Ihre Zahlung" in (m["text"] or "")
    )
    assert AMOUNT in thanks["text"] and "0" in thanks["text"]
    await adviser.wait_event(room_id, lambda e: "💳" in e.get("content", {}).get("body", ""))


def count_paid_notices(stack: Stack, adviser: Adviser, room_id: str) -> int:
    return len(adviser.room_events(room_id, lambda e: "💳" in e.get("content", {}).get("body", "")))


async def ship_and_list(stack: Stack, adviser: Adviser, visitor: Visitor, room_id: str) -> None:
    key, body = await command(stack, adviser, room_id, "!orders")
    assert key == "✅" and "bezahlt" in body  # the test shop is German
    number = body.splitlines()[1].split(" — ")[0]
    key, body = await command(
        stack, adviser, room_id, f"!order {number} shipped https://track.example/ZX123"
    )
    assert key == "✅" and "versandt" in body
    shipped = await visitor.wait_message(
        lambda m: m["direction"] == "out" and "ist unterwegs" in (m["text"] or "")
    )
    assert "/l/" in shipped["text"]  # the tracking link goes through a counted short link
    # An impossible move is refused with a clear reason.
    key, body = await command(stack, adviser, room_id, f"!order {number} cancelled")
    assert key == "⛔" and "wurde bereits versandt; sie kann nicht storniert werden" in body


@pytest.mark.parametrize("provider", ["stripe", "mollie", "shopify", "woocommerce"])
async def test_pay_with_provider(
    stack: Stack,
    adviser: Adviser,
    visitor: Visitor,
    providers: Providers,
    http: aiohttp.ClientSession,
    provider: str,
) -> None:
    await use_provider(stack, providers, provider)
    room_id, _short, target = await pay_and_follow_link(
        stack, adviser, visitor, f"Zahlung {provider}"
    )
    webhook = f"{stack.hub_url}/webhooks/payments/{provider}"

    if provider == "stripe":
        [created] = providers.stripe.created()[-1:]
        session_id = created.response["id"]
        assert target == created.response["url"]
        event = providers.stripe.event(session_id)
        forged = await providers.stripe.post_event(webhook, event, signature="t=1,v1=00")
        assert forged[0] in (400, 401, 403)
        assert (await providers.stripe.post_event(webhook, event))[0] == 200
        assert (await providers.stripe.post_event(webhook, event))[0] == 200  # redelivered
    elif provider == "mollie":
        [created] = providers.mollie.created()[-1:]
        payment_id = created.response["id"]
        providers.mollie.set_status(payment_id, "paid")
        assert (await providers.mollie.call_webhook(payment_id, webhook))[0] == 200
        assert (await providers.mollie.call_webhook(payment_id, webhook))[0] == 200
    elif provider == "shopify":
        query = parse_qs(urlsplit(target).query)
        assert urlsplit(target).path.startswith("/cart/41230987001:2")
        reference = query["attributes[hub_reference]"][0]
        order = providers.shopify.order(reference=reference, total="119.80")
        forged = await providers.shopify.send(webhook, order, signature="AAAA")
        assert forged[0] in (401, 403)
        raw, headers = providers.shopify.delivery(order)
        for _ in range(2):  # Shopify redelivers with the same webhook id
            async with http.post(webhook, data=raw, headers=headers) as resp:
                assert resp.status == 200
    else:
        woo_order_id = max(providers.woo.orders)
        payload = providers.woo.webhook_payload(woo_order_id, "processing")
        hooks = providers.woo.webhooks
        assert (await hooks.send(webhook, payload, signature="bad"))[0] in (401, 403)
        raw, headers = hooks.delivery(payload)
        for _ in range(2):
            async with http.post(webhook, data=raw, headers=headers) as resp:
                assert resp.status == 200

    await expect_paid_once(stack, adviser, visitor, room_id)
    await ship_and_list(stack, adviser, visitor, room_id)
    assert count_paid_notices(stack, adviser, room_id) == 1
    thanks = [m for m in await visitor.history() if "Ihre Zahlung" in (m["text"] or "")]
    assert len(thanks) == 1


@pytest.mark.browser
async def test_builtin_checkout_page_in_a_real_browser(
    stack: Stack, adviser: Adviser, visitor: Visitor, providers: Providers
) -> None:
    from playwright.async_api import expect

    from tests.browser import chromium_available, chromium_page, screenshot

    if not chromium_available():
        pytest.skip("chromium is not installed")
    await use_provider(stack, providers, "builtin")
    room_id, short, target = await pay_and_follow_link(stack, adviser, visitor, "Kasse Hub")
    assert target.startswith(f"{stack.hub_url}/checkout/hub-")
    async with chromium_page() as page:
        await page.goto(short)  # the customer taps the link in their chat
        await expect(page.get_by_test_id("total")).to_have_text(AMOUNT)
        await page.get_by_label("Vor- und Nachname").fill("Jürgen Ölmann")
        await page.get_by_label("Straße und Hausnummer").fill("Farbweg 3")
        await page.get_by_label("PLZ").fill("50667")
        await page.get_by_label("Ort").fill("Köln")
        await page.get_by_label("Land").select_option("DE")
        await page.get_by_label("Rechnung").check()
        await page.get_by_test_id("place-order").click()
        await expect(page.get_by_test_id("done-title")).to_have_text(
            "Vielen Dank für Ihre Bestellung!"
        )
        await expect(page.get_by_test_id("amount")).to_have_text(AMOUNT)
        await screenshot(page, "hub-checkout-done", full_page=True)
        number = await page.get_by_test_id("order-number").inner_text()

    notice = await adviser.wait_event(
        room_id, lambda e: "🧾" in e.get("content", {}).get("body", "")
    )
    assert number in notice["content"]["body"] and "Jürgen Ölmann" in notice["content"]["body"]
    placed = await visitor.wait_message(
        lambda m: m["direction"] == "out" and "bei uns eingegangen" in (m["text"] or "")
    )
    assert number in placed["text"] and AMOUNT in placed["text"]
    # On invoice the goods go out first, with the invoice: shipping needs no payment.
    key, body = await command(stack, adviser, room_id, f"!order {number} shipped")
    assert key == "✅" and "versandt" in body
    # The invoice is paid later: the customer is thanked once, for paying the invoice.
    key, _ = await command(stack, adviser, room_id, f"!order {number} paid")
    assert key == "✅"
    invoice_paid = shop_text(
        "Thank you! We received the payment of your invoice for order {number} ({amount}).",
        number=number,
        amount=AMOUNT,
    )
    await visitor.wait_message(lambda m: m["direction"] == "out" and m["text"] == invoice_paid)
    await adviser.wait_event(room_id, lambda e: "💳" in e.get("content", {}).get("body", ""))
    key, body = await command(stack, adviser, room_id, f"!order {number} paid")
    assert key == "✅" and "bereits bezahlt" in body
    assert count_paid_notices(stack, adviser, room_id) == 1
    thanks = [m for m in await visitor.history() if m["text"] == invoice_paid]
    assert len(thanks) == 1
    key, body = await command(stack, adviser, room_id, "!orders")
    assert key == "✅" and "versandt" in body
