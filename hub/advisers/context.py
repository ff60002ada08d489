"""Who the customer is, for the advisers: the notice pinned in a new portal and `!customer`.
Pure: hub.db.context reads the facts, this module words them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from babel.dates import format_date

from hub.commerce.cart import Cart
from hub.commerce.money import Money, format_money
from hub.commerce.orders import OrderStatus, format_order_number, status_label
from hub.commerce.render import item_count
from hub.i18n import _

# An adviser wants the recent picture, not the archive: older ones are counted.
MAX_ORDERS = 5
MAX_CART_LINES = 5


@dataclass(frozen=True)
class OrderFact:
    id: int
    status: str
    total: Money
    created_at: datetime


@dataclass(frozen=True)
class CustomerFacts:
    conversation_id: int
    channel: str  # the channel's kind ("whatsapp"); its label is the caller's
    customer_name: str | None
    started_at: datetime  # this conversation's start
    earlier: int  # the customer's other conversations (other channels, same customer)
    first_contact: datetime | None  # the oldest of those
    carts: tuple[Cart, ...]  # carts with something in them
    orders: tuple[OrderFact, ...]  # newest first, at most MAX_ORDERS
    order_count: int  # all of them
    room_id: str | None = None  # the conversation's portal, where the notice goes


def _date(moment: datetime, timezone: str, locale: str) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_date(moment.astimezone(ZoneInfo(timezone)), "medium", locale=locale)


def _cart_line(cart: Cart, locale: str) -> str:
    items = ", ".join(f"{line.quantity} × {line.name}" for line in cart.lines[:MAX_CART_LINES])
    if len(cart.lines) > MAX_CART_LINES:
        items += ", …"
    return _("Open cart: {count}, {total} — {items}").format(
        count=item_count(cart.item_count), total=format_money(cart.total, locale), items=items
    )


def _order_text(order: OrderFact, prefix: str, timezone: str, locale: str) -> str:
    try:
        status = status_label(OrderStatus(order.status))
    except ValueError:  # a status a newer hub wrote: shown as it is stored
        status = order.status
    return _("{number} {status} ({total}, {date})").format(
        number=format_order_number(order.id, prefix=prefix),
        status=status,
        total=format_money(order.total, locale),
        date=_date(order.created_at, timezone, locale),
    )


def context_lines(
    facts: CustomerFacts, channel_label: str, *, locale: str, timezone: str, order_prefix: str
) -> list[str]:
    """One line per fact, in the order an adviser asks: who, been here before, what they
    are buying, what they bought."""
    name = " ".join((facts.customer_name or "").split()) or _("Customer")
    lines = [
        "👤 "
        + _("{name} via {channel}, writing since {date}").format(
            name=name,
            channel=_(channel_label),
            date=_date(facts.started_at, timezone, locale),
        )
    ]
    if facts.earlier and facts.first_contact is not None:
        lines.append(
            "🗂 "
            + _("Earlier conversations: {count}, the first on {date}").format(
                count=facts.earlier, date=_date(facts.first_contact, timezone, locale)
            )
        )
    else:
        lines.append("🗂 " + _("No earlier conversations."))
    if facts.carts:
        lines += ["🛒 " + _cart_line(cart, locale) for cart in facts.carts]
    else:
        lines.append("🛒 " + _("No open cart."))
    if facts.orders:
        orders = "; ".join(_order_text(o, order_prefix, timezone, locale) for o in facts.orders)
        more = facts.order_count - len(facts.orders)
        if more > 0:
            orders += "; " + _("{count} older").format(count=more)
        lines.append("📦 " + _("Orders: {orders}").format(orders=orders))
    else:
        lines.append("📦 " + _("No orders yet."))
    return lines


def render_context(
    facts: CustomerFacts, channel_label: str, *, locale: str, timezone: str, order_prefix: str
) -> tuple[str, str]:
    """(plain text, HTML) of the customer's context notice."""
    head = _("About this customer")
    lines = context_lines(
        facts, channel_label, locale=locale, timezone=timezone, order_prefix=order_prefix
    )
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return (
        "\n".join([head + ":", *lines]),
        f"<p><strong>{html.escape(head)}</strong></p><ul>{items}</ul>",
    )
