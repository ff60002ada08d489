"""Text for carts, products and search results, in the shop's language, locale and currency.

Pure string building: the handlers decide where it goes (an m.notice in the room, a message in
the customer's messenger). Room notices come as (plain, HTML) pairs because Matrix clients show
``formatted_body`` when they can and ``body`` otherwise; every value from the catalogue is
escaped in the HTML, since a product name is data typed by someone else.

The words come from the gettext catalogues in the shop's language (hub.i18n); numbers and
currencies follow CLDR for ``locale`` through money.format_money, so a German shop's customer
reads "inkl. 19 % MwSt.: 5,10 €".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from zoneinfo import ZoneInfo

from hub.commerce.cart import Cart, CartLine
from hub.commerce.catalogue import Product
from hub.commerce.money import Money, format_money, format_rate, vat_included
from hub.i18n import _, ngettext

CART_ICON = "🛒"
SEARCH_ICON = "🔎"


def item_count(n: int) -> str:
    """ "3 items" / "3 Artikel"."""
    return ngettext("{n} item", "{n} items", n).format(n=n)


def vat_label(rate: Decimal, locale: str) -> str:
    """ "incl. 19% VAT" / "inkl. 19 % MwSt." (a product card's price note)."""
    return _("incl. {rate} VAT").format(rate=format_rate(rate, locale))


def vat_lines(breakdown: Mapping[Decimal, Money], locale: str) -> list[str]:
    """ "incl. 19% VAT: €5.10" per rate of a cart (see Cart.vat_breakdown)."""
    # A 0 % rate has nothing to declare; printing "incl. 0 % VAT: 0,00 €" only confuses.
    return [
        _("incl. {rate} VAT: {amount}").format(
            rate=format_rate(rate, locale), amount=format_money(vat, locale)
        )
        for rate, vat in breakdown.items()
        if not vat.is_zero
    ]


def _total(cart: Cart, locale: str) -> str:
    return _("Total: {amount}").format(amount=format_money(cart.total, locale))


def _each(line: CartLine, locale: str) -> str:
    return _("{price} each").format(price=format_money(line.unit_price, locale))


# --- cart ---------------------------------------------------------------------------------------


def _line_text(line: CartLine, locale: str, *, sku: bool) -> str:
    """``2 × Name (SKU): 25,00 € (je 12,50 €)``; without the unit price for a single piece."""
    name = f"{line.name} ({line.sku})" if sku else line.name
    text = f"{line.quantity} × {name}: {format_money(line.total, locale)}"
    if line.quantity > 1:
        text += f" ({_each(line, locale)})"
    return text


def _line_html(line: CartLine, locale: str) -> str:
    name = f"{escape(line.name)} (<code>{escape(line.sku)}</code>)"
    total = escape(format_money(line.total, locale))
    text = f"{line.quantity} × {name}: <strong>{total}</strong>"
    if line.quantity > 1:
        text += f" ({escape(_each(line, locale))})"
    return text


def cart_notice(cart: Cart, locale: str) -> tuple[str, str]:
    """The cart for the advisers' room as (plain text, HTML) for an m.notice."""
    if cart.is_empty:
        text = CART_ICON + " " + _("The cart is empty.")
        return text, f"<p>{escape(text)}</p>"
    heading = CART_ICON + " " + _("Cart: {count}").format(count=item_count(cart.item_count))
    total = _total(cart, locale)
    vat = vat_lines(cart.vat_breakdown(), locale)
    plain = "\n".join(
        [heading, *(_line_text(line, locale, sku=True) for line in cart.lines), total, *vat]
    )
    items = "".join(f"<li>{_line_html(line, locale)}</li>" for line in cart.lines)
    footer = "<br>".join([f"<strong>{escape(total)}</strong>", *(escape(v) for v in vat)])
    html = f"<p><strong>{escape(heading)}</strong></p><ul>{items}</ul><p>{footer}</p>"
    return plain, html


def cart_for_customer(cart: Cart, locale: str) -> str:
    """The cart as plain text for the customer's messenger: no SKUs, no markup."""
    if cart.is_empty:
        return _("Your cart is empty.")
    lines = [_("Your cart:")]
    lines += [_line_text(line, locale, sku=False) for line in cart.lines]
    lines.append(_total(cart, locale))
    lines += vat_lines(cart.vat_breakdown(), locale)
    return "\n".join(lines)


# --- products -----------------------------------------------------------------------------------


def product_card_text(product: Product, locale: str) -> str:
    """Name, price with the VAT it includes, link and stock, for a product card or caption."""
    price = format_money(product.price, locale)
    if product.vat_rate > 0:
        price += f" ({vat_label(product.vat_rate, locale)})"
    lines = [product.name, price]
    if not product.in_stock:
        lines.append(_("Out of stock"))
    if product.product_url:
        lines.append(product.product_url)
    return "\n".join(lines)


def _result_plain(product: Product, locale: str) -> str:
    parts = [product.sku, product.name, format_money(product.price, locale)]
    if not product.in_stock:
        parts.append(_("out of stock"))
    return " · ".join(parts)


def _result_html(product: Product, locale: str) -> str:
    parts = [
        f"<code>{escape(product.sku)}</code>",
        escape(product.name),
        f"<strong>{escape(format_money(product.price, locale))}</strong>",
    ]
    if not product.in_stock:
        parts.append("<em>" + escape(_("out of stock")) + "</em>")
    return " · ".join(parts)


def search_results(products: Sequence[Product], locale: str, *, query: str = "") -> tuple[str, str]:
    """Search hits for the advisers' room as (plain, HTML): SKU · name · price per line."""
    if not products:
        if query:
            nothing = _("No products found for “{query}”.").format(query=query)
        else:
            nothing = _("No products found.")
        text = f"{SEARCH_ICON} {nothing}"
        return text, f"<p>{escape(text)}</p>"
    n = len(products)
    count = ngettext("{n} product", "{n} products", n).format(n=n)
    if query:
        found = ngettext("{n} product for “{query}”", "{n} products for “{query}”", n)
        count = found.format(n=n, query=query)
    heading = f"{SEARCH_ICON} {count}"
    plain = "\n".join([heading, *(_result_plain(p, locale) for p in products)])
    items = "".join(f"<li>{_result_html(p, locale)}</li>" for p in products)
    return plain, f"<p>{escape(heading)}</p><ul>{items}</ul>"


def vat_note(gross: Money, rate: Decimal, locale: str) -> str:
    """ "incl. 19 % VAT: 13,49 €" for a single amount, e.g. under an order total."""
    return _("incl. {rate} VAT: {amount}").format(
        rate=format_rate(rate, locale), amount=format_money(vat_included(gross, rate), locale)
    )


def order_time(moment: datetime, timezone: str, locale: str) -> str:
    """When an order was made, in the shop's time zone and locale, saying which zone:
    "07.12.26, 10:00 MEZ", "12/7/26, 4:00 AM EST" (CLDR's short name, else the offset)."""
    if moment.tzinfo is None:  # stored as UTC; an engine that forgets the zone gives it back bare
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(ZoneInfo(timezone))
    from babel.dates import format_datetime, get_timezone_name

    when = format_datetime(local, "short", locale=locale)
    return f"{when} {get_timezone_name(local, 'short', locale=locale)}"
