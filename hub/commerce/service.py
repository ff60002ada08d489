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
    PaymentTerms,
    decide,
    format_order_number,
    is_paid,
    status_label,
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


def payment_method(order: Order) -> str | None:
    """The method the customer chose on the built-in checkout page ("invoice",
    "prepayment"), None for an order paid at a provider or not placed yet."""
    method = (order.details or {}).get("payment_method")
    return method if isinstance(method, str) and method else None


def payment_terms(order: Order) -> PaymentTerms:
    """An order placed on invoice is paid after its goods went out; any other before."""
    if order.provider == "builtin" and payment_method(order) == "invoice":
        return PaymentTerms.INVOICE
    return PaymentTerms.PREPAID


def order_paid(order: Order) -> bool:
    """Whether the order's money is in (an invoice order can be shipped and still open)."""
    return is_paid(OrderStatus(order.status), payment_terms(order), order.paid_at is not None)


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

    def checkout_link_text(self, order: Order, link: str) -> str:
        """The customer's message with an order's checkout link (the short link)."""
        template = configured(
            self.commerce.texts.checkout_link, _("Here is your checkout link for {amount}: {link}")
        )
        amount = self.money(Money(order.total_minor, order.currency))
        return fill(template, amount=amount, link=link, number=self.order_number(order))

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
        False when the event was a repeat (already applied): nothing is sent twice.

        On invoice the goods may go out before the money comes in, and the payment of a
        shipped order keeps its status: it is recorded in paid_at, the customer is thanked
        for paying the invoice and the room reads "invoice paid"."""
        before = OrderStatus(order.status)
        method = payment_method(order)
        decision = decide(
            before,
            event,
            terms=payment_terms(order),
            paid=order.paid_at is not None,
            order=self.order_number(order),
        )
        if decision.repeat:
            return False
        after = decision.status
        now = utcnow()
        order.status = after.value
        order.updated_at = now
        if decision.payment:
            order.paid_at = now
        conversation = tx.orm.get(Conversation, order.conversation_id)
        assert conversation is not None
        number = self.order_number(order)
        amount = self.money(Money(order.total_minor, order.currency))
        # A payment's key is "paid" whatever the status: an order is paid once.
        key = f"order:{order.id}:{'paid' if decision.payment else after.value}"
        customer: str | None
        if decision.payment:
            customer = self._paid_text(method, number, amount)
        else:
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
            if decision.payment and after != OrderStatus.PAID:
                # An invoice paid after its goods went out: the status stays shipped/delivered.
                note = _(
                    "Order {number}: invoice paid ({amount}), the order stays {status} — {source}"
                ).format(number=number, amount=amount, status=status_label(after), source=source)
            else:
                note = _("Order {number} {status} ({amount}) — {source}").format(
                    number=number, status=status_label(after), amount=amount, source=source
                )
            if tracking_url:
                note += " — " + _("tracking: {url}").format(url=tracking_url)
            if detail:
                note += f" — {detail}"
            icon = _ORDER_ICONS.get(OrderStatus.PAID if decision.payment else after, "•")
            notices.notice(tx, conversation.room_id, f"{icon} {note}", f"{key}:room")
        return True

    def _paid_text(self, method: str | None, number: str, amount: str) -> str:
        """The customer's thanks for a payment, true for the way they paid: the money of an
        invoice or of a bank transfer came in; an online payment is the shop's configured
        text (texts.thank_you) or the catalogue's."""
        if method == "invoice":
            text = _(
                "Thank you! We received the payment of your invoice for order {number} ({amount})."
            )
        elif method == "prepayment":
            text = _("Thank you! Your bank transfer for order {number} ({amount}) has arrived.")
        else:
            text = configured(
                self.commerce.texts.thank_you,
                _("Thank you! We received the payment for order {number} ({amount})."),
            )
        return fill(text, number=number, amount=amount)

    def _order_text(
        self, after: OrderStatus, number: str, amount: str, tracking: str | None, detail: str
    ) -> str | None:
        """The customer's news of a status (a payment: ``_paid_text``, which knows how)."""
        texts = self.commerce.texts
        if after == OrderStatus.PAID:
            return self._paid_text(None, number, amount)
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
