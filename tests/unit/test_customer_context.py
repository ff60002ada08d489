"""The customer's context notice (hub.advisers.context, pure): who, earlier conversations,
open carts, orders with their states; dates in the shop's time zone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from hub.advisers.context import CustomerFacts, OrderFact, render_context
from hub.commerce.cart import Cart
from hub.commerce.catalogue import Product
from hub.commerce.money import Money

NB = "\u00a0"
PAINT = Product("AC-1", "Acrylfarbe Blau", Money(1250, "EUR"), Decimal("19"))
BRUSH = Product("PI-1", "Pinsel <fein>", Money(695, "EUR"), Decimal("19"))


def facts(**changes: object) -> CustomerFacts:
    base: dict[str, object] = {
        "conversation_id": 7,
        "channel": "whatsapp",
        "customer_name": "Anna Müller",
        "started_at": datetime(2026, 12, 3, 23, 30, tzinfo=UTC),  # the 4th in Berlin
        "earlier": 0,
        "first_contact": None,
        "carts": (),
        "orders": (),
        "order_count": 0,
    }
    return CustomerFacts(**(base | changes))  # type: ignore[arg-type]


def render(f: CustomerFacts, locale: str = "en_US") -> tuple[str, str]:
    return render_context(
        f, "WhatsApp", locale=locale, timezone="Europe/Berlin", order_prefix="FM-"
    )


def test_a_new_customer() -> None:
    text, html = render(facts())
    assert text.split("\n") == [
        "About this customer:",
        "👤 Anna Müller via WhatsApp, writing since Dec 4, 2026",
        "🗂 No earlier conversations.",
        "🛒 No open cart.",
        "📦 No orders yet.",
    ]
    assert html.startswith("<p><strong>About this customer</strong></p><ul><li>👤 Anna Müller")


def test_a_known_customer_with_cart_and_orders(shop_language: Callable[[str], None]) -> None:
    cart = Cart.empty("EUR").add(PAINT, 2, 10).add(BRUSH, 1, 10)
    orders = (
        OrderFact(12, "paid", Money(3195, "EUR"), datetime(2026, 11, 30, 9, 0, tzinfo=UTC)),
        OrderFact(9, "delivered", Money(1250, "EUR"), datetime(2026, 3, 1, 9, 0, tzinfo=UTC)),
    )
    f = facts(
        earlier=2,
        first_contact=datetime(2025, 1, 2, 8, 0, tzinfo=UTC),
        carts=(cart,),
        orders=orders,
        order_count=5,
        customer_name=None,
    )
    text, html = render(f)
    lines = text.split("\n")
    assert lines[1] == "👤 Customer via WhatsApp, writing since Dec 4, 2026"
    assert lines[2] == "🗂 Earlier conversations: 2, the first on Jan 2, 2025"
    assert lines[3] == ("🛒 Open cart: 3 items, €31.95 — 2 × Acrylfarbe Blau, 1 × Pinsel <fein>")
    assert lines[4] == (
        "📦 Orders: FM-0012 paid (€31.95, Nov 30, 2026); "
        "FM-0009 delivered (€12.50, Mar 1, 2026); 3 older"
    )
    assert "Pinsel &lt;fein&gt;" in html and "<fein>" not in html
    shop_language("de_DE")
    text, _ = render(f, "de_DE")
    assert f"31,95{NB}€" in text and "04.12.2026" in text


def test_an_order_status_this_hub_does_not_know_is_shown_as_stored() -> None:
    order = OrderFact(3, "refunded", Money(100, "EUR"), datetime(2026, 1, 1, tzinfo=UTC))
    text, _ = render(facts(orders=(order,), order_count=1))
    assert "FM-0003 refunded" in text
