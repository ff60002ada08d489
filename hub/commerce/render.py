"""Text for carts, products and search results, in the shop's locale and currency.

Pure string building: the handlers decide where it goes (an m.notice in the room, a message in
the customer's messenger). Room notices come as (plain, HTML) pairs because Matrix clients show
``formatted_body`` when they can and ``body`` otherwise; every value from the catalogue is
escaped in the HTML, since a product name is data typed by someone else.

Numbers and currencies follow CLDR through money.format_money. The few words around them come
from a small table for English, German and French (other locales fall back to English) so a
German shop's customer does not read "incl. 19 % VAT"; a full translation system can replace
the table later without touching the callers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from types import MappingProxyType

from hub.commerce.cart import Cart, CartLine
from hub.commerce.catalogue import Product
from hub.commerce.money import Money, format_money, format_rate, vat_included

CART_ICON = "🛒"
SEARCH_ICON = "🔎"


@dataclass(frozen=True, slots=True)
class Labels:
    """Words for one language. ``{n}``, ``{rate}`` and ``{query}`` are filled in."""

    colon: str
    cart: str
    cart_empty: str
    your_cart: str
    your_cart_empty: str
    item: str
    items: str
    each: str
    total: str
    vat: str
    out_of_stock: str
    product: str
    products: str
    found_for: str
    nothing_found: str
    nothing: str


LABELS: Mapping[str, Labels] = MappingProxyType(
    {
        "en": Labels(
            colon=": ",
            cart="Cart",
            cart_empty="The cart is empty.",
            your_cart="Your cart",
            your_cart_empty="Your cart is empty.",
            item="1 item",
            items="{n} items",
            each="each",
            total="Total",
            vat="incl. {rate} VAT",
            out_of_stock="out of stock",
            product="1 product",
            products="{n} products",
            found_for="{count} for “{query}”",
            nothing_found="No products found for “{query}”.",
            nothing="No products found.",
        ),
        "de": Labels(
            colon=": ",
            cart="Warenkorb",
            cart_empty="Der Warenkorb ist leer.",
            your_cart="Ihr Warenkorb",
            your_cart_empty="Ihr Warenkorb ist leer.",
            item="1 Artikel",
            items="{n} Artikel",
            each="je",
            total="Gesamt",
            vat="inkl. {rate} MwSt.",
            out_of_stock="nicht vorrätig",
            product="1 Produkt",
            products="{n} Produkte",
            found_for="{count} für „{query}“",
            nothing_found="Keine Produkte für „{query}“ gefunden.",
            nothing="Keine Produkte gefunden.",
        ),
        "fr": Labels(
            # French puts a (no-break) space before the colon.
            colon="\u00a0: ",
            cart="Panier",
            cart_empty="Le panier est vide.",
            your_cart="Votre panier",
            your_cart_empty="Votre panier est vide.",
            item="1 article",
            items="{n} articles",
            each="l’unité",
            total="Total",
            vat="dont TVA {rate}",
            out_of_stock="en rupture de stock",
            product="1 produit",
            products="{n} produits",
            found_for="{count} pour «\u00a0{query}\u00a0»",
            nothing_found="Aucun produit trouvé pour «\u00a0{query}\u00a0».",
            nothing="Aucun produit trouvé.",
        ),
    }
)


def labels_for(locale: str) -> Labels:
    """The labels for ``locale``'s language ("de_AT" -> German), English if we have none."""
    language = locale.replace("-", "_").split("_", 1)[0].lower()
    return LABELS.get(language, LABELS["en"])


def _count(n: int, one: str, many: str) -> str:
    return one if n == 1 else many.format(n=n)


def _vat_lines(breakdown: Mapping[Decimal, Money], locale: str, lab: Labels) -> list[str]:
    # A 0 % rate has nothing to declare; printing "incl. 0 % VAT: 0,00 €" only confuses.
    return [
        f"{lab.vat.format(rate=format_rate(rate, locale))}{lab.colon}{format_money(vat, locale)}"
        for rate, vat in breakdown.items()
        if not vat.is_zero
    ]


# --- cart ---------------------------------------------------------------------------------------


def _line_text(line: CartLine, locale: str, lab: Labels, *, sku: bool) -> str:
    """``2 × Name (SKU): 25,00 € (12,50 € each)``; without the unit price for a single piece."""
    name = f"{line.name} ({line.sku})" if sku else line.name
    text = f"{line.quantity} × {name}{lab.colon}{format_money(line.total, locale)}"
    if line.quantity > 1:
        text += f" ({format_money(line.unit_price, locale)} {lab.each})"
    return text


def _line_html(line: CartLine, locale: str, lab: Labels) -> str:
    name = f"{escape(line.name)} (<code>{escape(line.sku)}</code>)"
    total = escape(format_money(line.total, locale))
    text = f"{line.quantity} × {name}{escape(lab.colon)}<strong>{total}</strong>"
    if line.quantity > 1:
        text += f" ({escape(format_money(line.unit_price, locale))} {escape(lab.each)})"
    return text


def cart_notice(cart: Cart, locale: str) -> tuple[str, str]:
    """The cart for the advisers' room as (plain text, HTML) for an m.notice."""
    lab = labels_for(locale)
    if cart.is_empty:
        text = f"{CART_ICON} {lab.cart_empty}"
        return text, f"<p>{escape(text)}</p>"
    count = _count(cart.item_count, lab.item, lab.items)
    heading = f"{CART_ICON} {lab.cart}{lab.colon}{count}"
    total = f"{lab.total}{lab.colon}{format_money(cart.total, locale)}"
    vat = _vat_lines(cart.vat_breakdown(), locale, lab)
    plain = "\n".join(
        [heading, *(_line_text(line, locale, lab, sku=True) for line in cart.lines), total, *vat]
    )
    items = "".join(f"<li>{_line_html(line, locale, lab)}</li>" for line in cart.lines)
    footer = "<br>".join([f"<strong>{escape(total)}</strong>", *(escape(v) for v in vat)])
    html = (
        f"<p><strong>{escape(f'{CART_ICON} {lab.cart}')}</strong>{escape(lab.colon + count)}</p>"
        f"<ul>{items}</ul><p>{footer}</p>"
    )
    return plain, html


def cart_for_customer(cart: Cart, locale: str) -> str:
    """The cart as plain text for the customer's messenger: no SKUs, no markup."""
    lab = labels_for(locale)
    if cart.is_empty:
        return lab.your_cart_empty
    lines = [f"{lab.your_cart}{lab.colon.rstrip()}"]
    lines += [_line_text(line, locale, lab, sku=False) for line in cart.lines]
    lines.append(f"{lab.total}{lab.colon}{format_money(cart.total, locale)}")
    lines += _vat_lines(cart.vat_breakdown(), locale, lab)
    return "\n".join(lines)


# --- products -----------------------------------------------------------------------------------


def product_card_text(product: Product, locale: str) -> str:
    """Name, price with the VAT it includes, link and stock, for a product card or caption."""
    lab = labels_for(locale)
    price = format_money(product.price, locale)
    if product.vat_rate > 0:
        price += f" ({lab.vat.format(rate=format_rate(product.vat_rate, locale))})"
    lines = [product.name, price]
    if not product.in_stock:
        lines.append(lab.out_of_stock[:1].upper() + lab.out_of_stock[1:])
    if product.product_url:
        lines.append(product.product_url)
    return "\n".join(lines)


def _result_plain(product: Product, locale: str, lab: Labels) -> str:
    parts = [product.sku, product.name, format_money(product.price, locale)]
    if not product.in_stock:
        parts.append(lab.out_of_stock)
    return " · ".join(parts)


def _result_html(product: Product, locale: str, lab: Labels) -> str:
    parts = [
        f"<code>{escape(product.sku)}</code>",
        escape(product.name),
        f"<strong>{escape(format_money(product.price, locale))}</strong>",
    ]
    if not product.in_stock:
        parts.append(f"<em>{escape(lab.out_of_stock)}</em>")
    return " · ".join(parts)


def search_results(products: Sequence[Product], locale: str, *, query: str = "") -> tuple[str, str]:
    """Search hits for the advisers' room as (plain, HTML): SKU · name · price per line."""
    lab = labels_for(locale)
    if not products:
        nothing = lab.nothing_found.format(query=query) if query else lab.nothing
        text = f"{SEARCH_ICON} {nothing}"
        return text, f"<p>{escape(text)}</p>"
    count = _count(len(products), lab.product, lab.products)
    heading = f"{SEARCH_ICON} {lab.found_for.format(count=count, query=query) if query else count}"
    plain = "\n".join([heading, *(_result_plain(p, locale, lab) for p in products)])
    items = "".join(f"<li>{_result_html(p, locale, lab)}</li>" for p in products)
    return plain, f"<p>{escape(heading)}</p><ul>{items}</ul>"


def vat_note(gross: Money, rate: Decimal, locale: str) -> str:
    """ "incl. 19 % VAT: 13,49 €" for a single amount, e.g. under an order total."""
    lab = labels_for(locale)
    label = lab.vat.format(rate=format_rate(rate, locale))
    return f"{label}{lab.colon}{format_money(vat_included(gross, rate), locale)}"
