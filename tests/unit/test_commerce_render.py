"""Rendering carts, product cards and search results for the room and the customer."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hub.commerce.cart import Cart
from hub.commerce.catalogue import Product
from hub.commerce.money import Money
from hub.commerce.render import (
    LABELS,
    cart_for_customer,
    cart_notice,
    labels_for,
    product_card_text,
    search_results,
    vat_note,
)

NB = "\u00a0"  # CLDR's no-break space between number and currency or percent sign


def product(sku: str, minor: int, name: str, vat: str = "19", **extra: object) -> Product:
    return Product(sku, name, Money(minor, "EUR"), Decimal(vat), **extra)  # type: ignore[arg-type]


PAINT = product("AC-KB-500", 1250, "Acrylfarbe Kobaltblau 500 ml")
BRUSH = product("PI-FL-50", 695, "Flachpinsel 50 mm")
BOOK = product("BK-1", 1999, "Farbenlehre", vat="7")
VOUCHER = product("BU-FB-100", 2500, "Farbberatung", vat="0")
CART = Cart.empty("EUR").add(PAINT, 2, 10).add(BRUSH, 1, 10)


def test_cart_notice_en_us() -> None:
    plain, html = cart_notice(CART, "en_US")
    assert plain == (
        "🛒 Cart: 3 items\n"
        "2 × Acrylfarbe Kobaltblau 500 ml (AC-KB-500): €25.00 (€12.50 each)\n"
        "1 × Flachpinsel 50 mm (PI-FL-50): €6.95\n"
        "Total: €31.95\n"
        "incl. 19% VAT: €5.10"
    )
    assert html == (
        "<p><strong>🛒 Cart</strong>: 3 items</p><ul>"
        "<li>2 × Acrylfarbe Kobaltblau 500 ml (<code>AC-KB-500</code>): "
        "<strong>€25.00</strong> (€12.50 each)</li>"
        "<li>1 × Flachpinsel 50 mm (<code>PI-FL-50</code>): <strong>€6.95</strong></li>"
        "</ul><p><strong>Total: €31.95</strong><br>incl. 19% VAT: €5.10</p>"
    )


def test_cart_notice_de_de() -> None:
    plain, _ = cart_notice(CART, "de_DE")
    assert plain == (
        "🛒 Warenkorb: 3 Artikel\n"
        f"2 × Acrylfarbe Kobaltblau 500 ml (AC-KB-500): 25,00{NB}€ (12,50{NB}€ je)\n"
        f"1 × Flachpinsel 50 mm (PI-FL-50): 6,95{NB}€\n"
        f"Gesamt: 31,95{NB}€\n"
        f"inkl. 19{NB}% MwSt.: 5,10{NB}€"
    )


def test_cart_notice_fr_fr_uses_french_punctuation() -> None:
    plain, _ = cart_notice(CART, "fr_FR")
    lines = plain.split("\n")
    assert lines[0] == f"🛒 Panier{NB}: 3 articles"
    assert lines[1].endswith(f"(AC-KB-500){NB}: 25,00{NB}€ (12,50{NB}€ l’unité)")
    assert lines[-2:] == [f"Total{NB}: 31,95{NB}€", f"dont TVA 19{NB}%{NB}: 5,10{NB}€"]


def test_one_vat_line_per_rate_highest_first_and_none_for_zero() -> None:
    cart = Cart.empty("EUR").add(VOUCHER, 1, 10).add(BOOK, 1, 10).add(PAINT, 1, 10)
    plain, html = cart_notice(cart, "en_US")
    assert plain.split("\n")[-3:] == [
        "Total: €57.49",
        "incl. 19% VAT: €2.00",
        "incl. 7% VAT: €1.31",
    ]
    assert "0%" not in plain
    assert html.endswith("<br>incl. 19% VAT: €2.00<br>incl. 7% VAT: €1.31</p>")


def test_single_item_heading() -> None:
    assert cart_notice(Cart.empty("EUR").add(BRUSH, 1, 10), "en_US")[0].startswith(
        "🛒 Cart: 1 item\n"
    )


@pytest.mark.parametrize(
    ("locale", "text"),
    [
        ("en_US", "🛒 The cart is empty."),
        ("de_DE", "🛒 Der Warenkorb ist leer."),
        ("fr_FR", "🛒 Le panier est vide."),
    ],
)
def test_empty_cart_notice(locale: str, text: str) -> None:
    assert cart_notice(Cart.empty("EUR"), locale) == (text, f"<p>{text}</p>")


def test_catalogue_text_is_escaped_in_html() -> None:
    evil = product("X&Y", 100, '<img src=x onerror="alert(1)"> & Co')
    plain, html = cart_notice(Cart.empty("EUR").add(evil, 1, 10), "en_US")
    assert '<img src=x onerror="alert(1)"> & Co (X&Y)' in plain  # plain text stays as typed
    assert "<img" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; Co (<code>X&amp;Y</code>)" in html
    _, results = search_results([evil], "en_US", query="<b>")
    assert "<img" not in results and "<b>" not in results
    assert "&lt;b&gt;" in results


def test_customer_cart_has_no_skus_or_markup() -> None:
    assert cart_for_customer(CART, "de_DE") == (
        "Ihr Warenkorb:\n"
        f"2 × Acrylfarbe Kobaltblau 500 ml: 25,00{NB}€ (12,50{NB}€ je)\n"
        f"1 × Flachpinsel 50 mm: 6,95{NB}€\n"
        f"Gesamt: 31,95{NB}€\n"
        f"inkl. 19{NB}% MwSt.: 5,10{NB}€"
    )
    assert cart_for_customer(CART, "fr_FR").startswith(f"Votre panier{NB}:\n")
    assert cart_for_customer(Cart.empty("EUR"), "en_US") == "Your cart is empty."


def test_other_currencies_in_the_cart() -> None:
    yen = Cart.empty("JPY").add(Product("J-1", "筆 №3", Money(1100, "JPY"), Decimal(10)), 2, 10)
    assert cart_for_customer(yen, "en_US").split("\n")[1:] == [
        "2 × 筆 №3: ¥2,200 (¥1,100 each)",
        "Total: ¥2,200",
        "incl. 10% VAT: ¥200",
    ]


def test_locale_fallbacks() -> None:
    assert labels_for("de_AT") is LABELS["de"]
    assert labels_for("fr-CA") is LABELS["fr"]
    assert labels_for("ja_JP") is LABELS["en"]  # English words, Japanese number formatting
    plain, _ = cart_notice(CART, "de_CH")
    assert plain.split("\n")[-2] == "Gesamt: EUR\u00a031.95"


def test_product_card() -> None:
    card = product(
        "KF-TB-750",
        2495,
        "Farbé Kreidefarbe Taubenblau 750 ml",
        product_url="https://farbenhaus.example/p/farbe-kreide-taubenblau",
        in_stock=False,
    )
    assert product_card_text(card, "de_DE") == (
        "Farbé Kreidefarbe Taubenblau 750 ml\n"
        f"24,95{NB}€ (inkl. 19{NB}% MwSt.)\n"
        "Nicht vorrätig\n"
        "https://farbenhaus.example/p/farbe-kreide-taubenblau"
    )
    assert product_card_text(VOUCHER, "en_US") == "Farbberatung\n€25.00"  # no VAT, no link


def test_search_results() -> None:
    gone = product("AC-TW-500", 1190, "Acrylfarbe Titanweiß", in_stock=False)
    plain, html = search_results([PAINT, gone], "en_US", query="acryl")
    assert plain == (
        "🔎 2 products for “acryl”\n"
        "AC-KB-500 · Acrylfarbe Kobaltblau 500 ml · €12.50\n"
        "AC-TW-500 · Acrylfarbe Titanweiß · €11.90 · out of stock"
    )
    assert html == (
        "<p>🔎 2 products for “acryl”</p><ul>"
        "<li><code>AC-KB-500</code> · Acrylfarbe Kobaltblau 500 ml · <strong>€12.50</strong></li>"
        "<li><code>AC-TW-500</code> · Acrylfarbe Titanweiß · <strong>€11.90</strong>"
        " · <em>out of stock</em></li></ul>"
    )
    assert search_results([PAINT], "de_DE")[0].startswith("🔎 1 Produkt\n")


@pytest.mark.parametrize(
    ("locale", "query", "text"),
    [
        ("en_US", "xyz", "🔎 No products found for “xyz”."),
        ("de_DE", "xyz", "🔎 Keine Produkte für „xyz“ gefunden."),
        ("en_US", "", "🔎 No products found."),
    ],
)
def test_no_search_results(locale: str, query: str, text: str) -> None:
    assert search_results([], locale, query=query) == (text, f"<p>{text}</p>")


def test_vat_note() -> None:
    assert vat_note(Money(8450, "EUR"), Decimal(19), "de_DE") == f"inkl. 19{NB}% MwSt.: 13,49{NB}€"
    assert vat_note(Money(1000, "EUR"), Decimal("5.5"), "fr_FR") == (
        f"dont TVA 5,5{NB}%{NB}: 0,52{NB}€"
    )
