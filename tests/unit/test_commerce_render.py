"""Rendering carts, product cards and search results for the room and the customer: words in
the shop's language (hub.i18n, set per test with `shop_language`), amounts for the locale."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from hub.commerce.cart import Cart
from hub.commerce.catalogue import Product
from hub.commerce.money import Money
from hub.commerce.render import (
    cart_for_customer,
    cart_notice,
    order_time,
    product_card_text,
    search_results,
    vat_note,
)

SetLocale = Callable[[str], None]

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
        "<p><strong>🛒 Cart: 3 items</strong></p><ul>"
        "<li>2 × Acrylfarbe Kobaltblau 500 ml (<code>AC-KB-500</code>): "
        "<strong>€25.00</strong> (€12.50 each)</li>"
        "<li>1 × Flachpinsel 50 mm (<code>PI-FL-50</code>): <strong>€6.95</strong></li>"
        "</ul><p><strong>Total: €31.95</strong><br>incl. 19% VAT: €5.10</p>"
    )


def test_cart_notice_de_de(shop_language: SetLocale) -> None:
    shop_language("de_DE")
    plain, _ = cart_notice(CART, "de_DE")
    assert plain == (
        "🛒 Warenkorb: 3 Artikel\n"
        f"2 × Acrylfarbe Kobaltblau 500 ml (AC-KB-500): 25,00{NB}€ (je 12,50{NB}€)\n"
        f"1 × Flachpinsel 50 mm (PI-FL-50): 6,95{NB}€\n"
        f"Gesamt: 31,95{NB}€\n"
        f"inkl. 19{NB}% MwSt.: 5,10{NB}€"
    )


def test_a_shop_in_france_gets_english_words_and_french_amounts(shop_language: SetLocale) -> None:
    # The hub has German and English texts; other languages read English (hub.i18n).
    shop_language("fr_FR")
    plain, _ = cart_notice(CART, "fr_FR")
    lines = plain.split("\n")
    assert lines[0] == "🛒 Cart: 3 items"
    assert lines[1].endswith(f"(AC-KB-500): 25,00{NB}€ (12,50{NB}€ each)")
    assert lines[-2:] == [f"Total: 31,95{NB}€", f"incl. 19{NB}% VAT: 5,10{NB}€"]


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
        ("fr_FR", "🛒 The cart is empty."),
    ],
)
def test_empty_cart_notice(shop_language: SetLocale, locale: str, text: str) -> None:
    shop_language(locale)
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


def test_a_script_in_the_catalogue_is_text_in_every_html_notice() -> None:
    evil = product("<script>", 100, "<script>alert(1)</script>")
    cart = Cart.empty("EUR").add(evil, 2, 10)
    for html in (
        cart_notice(cart, "en_US")[1],
        cart_notice(cart.remove("<script>"), "en_US")[1],
        search_results([evil], "en_US", query="<script>alert(2)</script>")[1],
    ):
        assert "<script" not in html
    _, html = cart_notice(cart, "en_US")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; (<code>&lt;script&gt;</code>)" in html


def test_customer_cart_has_no_skus_or_markup(shop_language: SetLocale) -> None:
    assert cart_for_customer(Cart.empty("EUR"), "en_US") == "Your cart is empty."
    assert cart_for_customer(CART, "en_US").startswith("Your cart:\n")
    shop_language("de_DE")
    assert cart_for_customer(CART, "de_DE") == (
        "Ihr Warenkorb:\n"
        f"2 × Acrylfarbe Kobaltblau 500 ml: 25,00{NB}€ (je 12,50{NB}€)\n"
        f"1 × Flachpinsel 50 mm: 6,95{NB}€\n"
        f"Gesamt: 31,95{NB}€\n"
        f"inkl. 19{NB}% MwSt.: 5,10{NB}€"
    )


def test_other_currencies_in_the_cart() -> None:
    yen = Cart.empty("JPY").add(Product("J-1", "筆 №3", Money(1100, "JPY"), Decimal(10)), 2, 10)
    assert cart_for_customer(yen, "en_US").split("\n")[1:] == [
        "2 × 筆 №3: ¥2,200 (¥1,100 each)",
        "Total: ¥2,200",
        "incl. 10% VAT: ¥200",
    ]


def test_locale_fallbacks(shop_language: SetLocale) -> None:
    shop_language("ja_JP")  # English words, Japanese number formatting
    assert cart_notice(CART, "ja_JP")[0].split("\n")[-2] == "Total: €31.95"
    shop_language("de_CH")  # German words, Swiss number formatting
    plain, _ = cart_notice(CART, "de_CH")
    assert plain.split("\n")[-2] == "Gesamt: EUR\u00a031.95"


def test_product_card(shop_language: SetLocale) -> None:
    shop_language("de_DE")
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
    assert search_results([PAINT], "en_US", query="kobalt")[0].startswith(
        "🔎 1 product for “kobalt”\n"
    )


def test_search_results_de(shop_language: SetLocale) -> None:
    shop_language("de_DE")
    assert search_results([PAINT], "de_DE")[0].startswith("🔎 1 Produkt\n")
    assert search_results([PAINT, BRUSH], "de_DE", query="a")[0].startswith(
        "🔎 2 Produkte für „a“\n"
    )


@pytest.mark.parametrize(
    ("locale", "query", "text"),
    [
        ("en_US", "xyz", "🔎 No products found for “xyz”."),
        ("de_DE", "xyz", "🔎 Keine Produkte für „xyz“ gefunden."),
        ("en_US", "", "🔎 No products found."),
    ],
)
def test_no_search_results(shop_language: SetLocale, locale: str, query: str, text: str) -> None:
    shop_language(locale)
    assert search_results([], locale, query=query) == (text, f"<p>{text}</p>")


def test_vat_note(shop_language: SetLocale) -> None:
    assert vat_note(Money(1000, "EUR"), Decimal("5.5"), "fr_FR") == (
        f"incl. 5,5{NB}% VAT: 0,52{NB}€"
    )
    shop_language("de_DE")
    assert vat_note(Money(8450, "EUR"), Decimal(19), "de_DE") == f"inkl. 19{NB}% MwSt.: 13,49{NB}€"


@pytest.mark.parametrize(
    ("timezone", "locale", "shown"),
    [
        ("Europe/Berlin", "de_DE", "07.12.26, 10:00 MEZ"),
        ("Europe/Berlin", "de_DE", "07.07.26, 11:00 MESZ"),  # summer time
        ("Europe/Berlin", "en_US", "12/7/26, 10:00\u202fAM +0100"),
        ("America/New_York", "en_US", "12/7/26, 4:00\u202fAM EST"),
        ("UTC", "en_GB", "07/12/2026, 09:00 UTC"),
    ],
)
def test_order_times_are_the_shops_and_name_the_zone(
    timezone: str, locale: str, shown: str
) -> None:
    moment = datetime(2026, 7 if "MESZ" in shown else 12, 7, 9, 0, tzinfo=UTC)
    assert order_time(moment, timezone, locale) == shown
    # A time read back without its zone is UTC, as stored.
    assert order_time(moment.replace(tzinfo=None), timezone, locale) == shown
