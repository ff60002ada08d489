"""The shop inside the hub: catalogue index, carts, orders and what tells the customer.

Command handlers and webhooks call these functions inside a DB transaction; external calls
(creating a checkout at a payment provider) happen in the "commerce.checkout" outbox job.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from html import escape
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.commerce.cart import Cart, CartError
from hub.commerce.catalogue import CatalogueIndex
from hub.commerce.money import Money, format_money
from hub.commerce.orders import OrderEvent, OrderStatus, format_order_number, transition
from hub.commerce.render import cart_notice
from hub.core.bot import enqueue_notice, enqueue_room_event
from hub.core.outbox import Finish, Job
from hub.core.router import queue_outbound
from hub.db import commerce_repo
from hub.db.models import ChannelIdentity, Conversation, Message, Order, utcnow

if TYPE_CHECKING:
    from hub.hub import Hub

log = logging.getLogger(__name__)

CART_STATE_EVENT = "org.matrix_commerce_hub.cart"
CREATE_CHECKOUT = "commerce.checkout"
_INDEX_MAX_AGE = timedelta(seconds=10)


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def fill(template: str, **values: Any) -> str:
    """Fill {placeholders} of a configured text; unknown ones become empty, never an error."""
    text = template.format_map(_Blank({k: str(v) for k, v in values.items()}))
    # Tidy the gaps an empty placeholder leaves; never touch the no-break space in "84,50 €".
    return re.sub(r"[ \t]{2,}", " ", text).strip()


@dataclass
class Shop:
    hub: Hub
    _index: CatalogueIndex | None = None
    _version: tuple[int, str] | None = None
    _checked_at: Any = None

    @property
    def locale(self) -> str:
        return self.hub.config.shop.locale

    @property
    def currency(self) -> str:
        return self.hub.config.shop.currency

    def money(self, m: Money) -> str:
        return format_money(m, self.locale)

    def short_url(self, code: str) -> str:
        base = self.hub.config.commerce.short_link_base or self.hub.config.http.public_base
        return f"{str(base).rstrip('/')}/l/{code}"

    def order_number(self, order: Order) -> str:
        return format_order_number(order.id, prefix=self.hub.config.commerce.order_number_prefix)

    async def index(self, s: AsyncSession) -> CatalogueIndex:
        """The search index, rebuilt when the catalogue in the database changed."""
        now = utcnow()
        if self._index is not None and self._checked_at and now - self._checked_at < _INDEX_MAX_AGE:
            return self._index
        version = await commerce_repo.catalogue_version(s)
        if self._index is None or version != self._version:
            self._index = CatalogueIndex(await commerce_repo.load_products(s))
            self._version = version
        self._checked_at = now
        return self._index

    def forget_index(self) -> None:
        self._index = None

    async def save_cart(self, s: AsyncSession, conversation: Conversation, cart: Cart) -> None:
        """Store the cart and mirror it as a room state event every client can read."""
        await commerce_repo.save_cart(s, conversation.id, cart)
        if conversation.room_id:
            await enqueue_room_event(
                s,
                conversation.room_id,
                CART_STATE_EVENT,
                cart.to_json(),
                f"cart:{conversation.id}:{utcnow().isoformat()}",
                state_key="",
            )

    async def tell_customer(
        self,
        s: AsyncSession,
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
        identity = await s.get(ChannelIdentity, conversation.identity_id)
        assert identity is not None
        channel = self.hub.channels.get(identity.channel)
        values: dict[str, Any] = {
            "kind": "text",
            "text": text,
            "sender_mxid": sender_mxid,
            "sender_name": self.hub.config.shop.name,
        }
        catalog_id = self.hub.config.channels.whatsapp.catalog_id
        if product_sku and identity.channel == "whatsapp" and catalog_id:
            # WhatsApp shows the product from the shop's Meta catalogue, with add-to-cart.
            values |= {"kind": "product", "data": {"catalog_id": catalog_id, "sku": product_sku}}
        elif image_url:
            # Fetched from the shop's site when sent; the text becomes the caption.
            values |= {
                "kind": "image",
                "media": {"url": image_url, "filename": image_name, "mimetype": "", "size": 0},
            }
        template = self.hub.config.commerce.order_update_template
        window = channel.reply_window if channel else None
        closed = window is not None and (
            conversation.last_inbound_at is None or utcnow() - conversation.last_inbound_at > window
        )
        if closed and template and template_params is not None:
            language = next(
                (
                    t.language
                    for t in self.hub.config.channels.whatsapp.templates
                    if t.name == template
                ),
                "en",
            )
            values |= {
                "kind": "template",
                "data": {"name": template, "language": language, "params": template_params},
            }
        await queue_outbound(s, conversation, identity.channel, values, idempotency=key)

    async def apply(
        self,
        s: AsyncSession,
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
        conversation = await s.get(Conversation, order.conversation_id)
        assert conversation is not None
        number = self.order_number(order)
        amount = self.money(Money(order.total_minor, order.currency))
        texts = self.hub.config.commerce.texts
        customer = {
            OrderStatus.PAID: fill(texts.thank_you, number=number, amount=amount),
            OrderStatus.SHIPPED: fill(
                texts.shipped, number=number, tracking_url=tracking_url or ""
            ),
            OrderStatus.DELIVERED: fill(texts.delivered, number=number),
            OrderStatus.CANCELLED: fill(texts.cancelled, number=number, reason=detail),
        }.get(after)
        icon = {
            OrderStatus.PAID: "💳",
            OrderStatus.SHIPPED: "📦",
            OrderStatus.DELIVERED: "✅",
            OrderStatus.CANCELLED: "✖️",
            OrderStatus.EXPIRED: "⌛",
        }.get(after, "•")
        if after == OrderStatus.PAID:
            order.paid_at = utcnow()
        key = f"order:{order.id}:{after.value}"
        if customer:
            await self.tell_customer(
                s,
                conversation,
                customer,
                f"{key}:customer",
                sender_mxid=sender_mxid,
                template_params=[number, customer],
            )
        if conversation.room_id:
            note = f"{icon} Order {number} {after.value} ({amount}) — {source}"
            if tracking_url:
                note += f" — tracking: {tracking_url}"
            if detail:
                note += f" — {detail}"
            await enqueue_notice(s, conversation.room_id, note, f"{key}:room")
        return True

    async def order_to_cart(self, job: Job) -> Finish | None:
        """commerce.order_to_cart: a WhatsApp catalogue order becomes the conversation's cart.
        Queued behind the order's own delivery (same conversation), so the room exists."""

        async def finish(s: AsyncSession) -> None:
            message = await s.get(Message, job.payload["message_id"])
            if message is None:
                return
            conversation = await s.get(Conversation, message.conversation_id)
            assert conversation is not None
            index = await self.index(s)
            cart, problems = Cart(self.currency, ()), []
            for item in (message.data or {}).get("items", []):
                product = index.get(str(item.get("sku") or ""))
                qty = item.get("quantity")
                if product is None:
                    problems.append(f"{item.get('sku')}: not in the catalogue")
                    continue
                try:
                    cart = cart.add(product, int(qty), self.hub.config.commerce.max_quantity)
                except (CartError, TypeError, ValueError) as exc:
                    problems.append(f"{product.sku}: {exc}")
            await self.save_cart(s, conversation, cart)
            if conversation.room_id:
                text, html = cart_notice(cart, self.locale)
                intro = "🛒 The customer's WhatsApp order is now the cart."
                if problems:
                    intro += " Not taken over: " + "; ".join(problems)
                await enqueue_notice(
                    s,
                    conversation.room_id,
                    f"{intro}\n{text}",
                    f"order-cart-notice:{message.id}",
                    html=f"<p>{escape(intro)}</p>{html}",
                )

        return finish
