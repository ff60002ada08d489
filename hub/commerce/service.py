"""The shop inside the hub: catalogue index, carts, orders and what tells the customer.

Its methods take the unit of work's `tx` (commands, webhooks and job finishes run them in
their transaction); external calls (creating a checkout at a payment provider) happen in the
commerce.checkout job.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from typing import TYPE_CHECKING, Any

from hub.commerce.cart import Cart, CartError
from hub.commerce.catalogue import CatalogueIndex
from hub.commerce.money import Money, format_money
from hub.commerce.orders import (
    OrderEvent,
    OrderStatus,
    format_order_number,
    status_label,
    transition,
)
from hub.commerce.render import cart_notice
from hub.config import CommerceConfig, ShopConfig, WhatsappConfig
from hub.db import commerce, conversations, notices, outbound
from hub.db.models import Conversation, Order, utcnow
from hub.i18n import _
from hub.jobs import kinds
from hub.jobs.job import Finish, Job, handles

if TYPE_CHECKING:
    from hub.db.database import Tx

log = logging.getLogger(__name__)

CART_STATE_EVENT = "org.matrix_commerce_hub.cart"
_INDEX_MAX_AGE = timedelta(seconds=10)
_ORDER_ICONS = {
    OrderStatus.PAID: "💳",
    OrderStatus.SHIPPED: "📦",
    OrderStatus.DELIVERED: "✅",
    OrderStatus.CANCELLED: "✖️",
    OrderStatus.EXPIRED: "⌛",
}


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def configured(text: str | None, default: str) -> str:
    """A text set in the config (as it is, "" included), else `default`: the catalogue's text
    in the shop's language. `configured(texts.shipped, _("Good news: …"))`."""
    return default if text is None else text


def fill(template: str, **values: Any) -> str:
    """Fill {placeholders} of a configured text; unknown ones become empty, never an error."""
    text = template.format_map(_Blank({k: str(v) for k, v in values.items()}))
    # Tidy the gaps an empty placeholder leaves; never touch the no-break space in "84,50 €".
    return re.sub(r"[ \t]{2,}", " ", text).strip()


@dataclass
class Shop:
    shop: ShopConfig
    commerce: CommerceConfig
    whatsapp: WhatsappConfig  # templates and the Meta catalogue, for WhatsApp customers
    # The reply window of each enabled channel (None: unlimited).
    reply_windows: dict[str, timedelta | None]
    public_base: str
    _index: CatalogueIndex | None = None
    _version: tuple[int, str] | None = None
    _checked_at: datetime | None = field(default=None)

    @property
    def locale(self) -> str:
        return self.shop.locale

    @property
    def currency(self) -> str:
        return self.shop.currency

    def money(self, m: Money) -> str:
        return format_money(m, self.locale)

    def short_url(self, code: str) -> str:
        base = self.commerce.short_link_base or self.public_base
        return f"{str(base).rstrip('/')}/l/{code}"

    def order_number(self, order: Order) -> str:
        return format_order_number(order.id, prefix=self.commerce.order_number_prefix)

    def index(self, tx: Tx) -> CatalogueIndex:
        """The search index, rebuilt when the catalogue in the database changed."""
        now = utcnow()
        if self._index is not None and self._checked_at and now - self._checked_at < _INDEX_MAX_AGE:
            return self._index
        version = commerce.catalogue_version(tx)
        if self._index is None or version != self._version:
            self._index = CatalogueIndex(commerce.load_products(tx))
            self._version = version
        self._checked_at = now
        return self._index

    def save_cart(self, tx: Tx, conversation: Conversation, cart: Cart) -> None:
        """Store the cart and mirror it as a room state event every client can read."""
        commerce.save_cart(tx, conversation.id, cart)
        if conversation.room_id:
            notices.room_event(
                tx,
                conversation.room_id,
                CART_STATE_EVENT,
                cart.to_json(),
                f"cart:{conversation.id}:{utcnow().isoformat()}",
                state_key="",
            )

    def tell_customer(
        self,
        tx: Tx,
        conversation: Conversation,
        text: str,
        key: str,
        *,
        sender_mxid: str | None = None,
        template_params: list[str] | None = None,
        image_url: str | None = None,
        image_name: str = "image.jpg",
        product_sku: str | None = None,
    ) -> None:
        """A message to the customer in their channel; where the reply window has closed and
        a template is configured, the template (WhatsApp) goes instead of free text."""
        identity = conversations.identity(tx, conversation.identity_id)
        assert identity is not None
        values: dict[str, Any] = {
            "kind": "text",
            "text": text,
            "sender_mxid": sender_mxid,
            "sender_name": self.shop.name,
        }
        catalog_id = self.whatsapp.catalog_id
        if product_sku and identity.channel == "whatsapp" and catalog_id:
            # WhatsApp shows the product from the shop's Meta catalogue, with add-to-cart.
            values |= {"kind": "product", "data": {"catalog_id": catalog_id, "sku": product_sku}}
        elif image_url:
            # Fetched from the shop's site when sent; the text becomes the caption.
            values |= {
                "kind": "image",
                "media": {"url": image_url, "filename": image_name, "mimetype": "", "size": 0},
            }
        template = self.commerce.order_update_template
        if (
            template
            and template_params is not None
            and self._window_closed(identity.channel, conversation)
        ):
            language = next(
                (t.language for t in self.whatsapp.templates if t.name == template), "en"
            )
            values |= {
                "kind": "template",
                "data": {"name": template, "language": language, "params": template_params},
            }
        outbound.queue(tx, conversation.id, identity.channel, values, idempotency=key)

    def _window_closed(self, channel: str, conversation: Conversation) -> bool:
        window = self.reply_windows.get(channel)
        last = conversation.last_inbound_at
        return window is not None and (last is None or utcnow() - last > window)

    def apply(
        self,
        tx: Tx,
        order: Order,
        event: OrderEvent,
        *,
        source: str,
        detail: str = "",
        tracking_url: str | None = None,
        sender_mxid: str | None = None,
    ) -> bool:
        """Move an order through the state machine and tell customer and room.
        False when the event was a repeat (already applied): nothing is sent twice."""
        before = OrderStatus(order.status)
        after = transition(before, event, order=self.order_number(order))
        if after == before:
            return False
        order.status = after.value
        order.updated_at = utcnow()
        if after == OrderStatus.PAID:
            order.paid_at = utcnow()
        conversation = tx.orm.get(Conversation, order.conversation_id)
        assert conversation is not None
        number = self.order_number(order)
        amount = self.money(Money(order.total_minor, order.currency))
        key = f"order:{order.id}:{after.value}"
        customer = self._order_text(after, number, amount, tracking_url, detail)
        if customer:
            self.tell_customer(
                tx,
                conversation,
                customer,
                f"{key}:customer",
                sender_mxid=sender_mxid,
                template_params=[number, customer],
            )
        if conversation.room_id:
            note = _("Order {number} {status} ({amount}) — {source}").format(
                number=number, status=status_label(after), amount=amount, source=source
            )
            if tracking_url:
                note += " — " + _("tracking: {url}").format(url=tracking_url)
            if detail:
                note += f" — {detail}"
            icon = _ORDER_ICONS.get(after, "•")
            notices.notice(tx, conversation.room_id, f"{icon} {note}", f"{key}:room")
        return True

    def _order_text(
        self, after: OrderStatus, number: str, amount: str, tracking: str | None, detail: str
    ) -> str | None:
        texts = self.commerce.texts
        if after == OrderStatus.PAID:
            thank_you = configured(
                texts.thank_you,
                _("Thank you! We received the payment for order {number} ({amount})."),
            )
            return fill(thank_you, number=number, amount=amount)
        if after == OrderStatus.SHIPPED:
            shipped = configured(
                texts.shipped, _("Good news: order {number} is on its way. {tracking_url}")
            )
            return fill(shipped, number=number, tracking_url=tracking or "")
        if after == OrderStatus.DELIVERED:
            delivered = configured(texts.delivered, _("Order {number} has been delivered. Enjoy!"))
            return fill(delivered, number=number)
        if after == OrderStatus.CANCELLED:
            cancelled = configured(
                texts.cancelled, _("Order {number} has been cancelled. {reason}")
            )
            return fill(cancelled, number=number, reason=detail)
        return None

    @handles(kinds.ORDER_TO_CART)
    async def order_to_cart(self, job: Job) -> Finish | None:
        """A WhatsApp catalogue order becomes the conversation's cart. Queued behind the
        order's own delivery (same conversation), so the room exists."""

        def finish(tx: Tx) -> None:
            message = conversations.message(tx, job.payload["message_id"])
            if message is None:
                return
            conversation = tx.orm.get(Conversation, message.conversation_id)
            assert conversation is not None
            cart, problems = self._cart_of_order(tx, message.data or {})
            self.save_cart(tx, conversation, cart)
            if conversation.room_id:
                text, html = cart_notice(cart, self.locale)
                intro = "🛒 " + _("The customer's WhatsApp order is now the cart.")
                if problems:
                    intro += " " + _("Not taken over: {problems}").format(
                        problems="; ".join(problems)
                    )
                notices.notice(
                    tx,
                    conversation.room_id,
                    f"{intro}\n{text}",
                    f"order-cart-notice:{message.id}",
                    html=f"<p>{escape(intro)}</p>{html}",
                )

        return finish

    def _cart_of_order(self, tx: Tx, data: dict[str, Any]) -> tuple[Cart, list[str]]:
        index = self.index(tx)
        cart, problems = Cart(self.currency, ()), []
        for item in data.get("items", []):
            product = index.get(str(item.get("sku") or ""))
            if product is None:
                problems.append(_("{sku}: not in the catalogue").format(sku=item.get("sku")))
                continue
            try:
                cart = cart.add(product, int(item.get("quantity")), self.commerce.max_quantity)
            except (CartError, TypeError, ValueError) as exc:
                problems.append(f"{product.sku}: {exc}")
        return cart, problems
