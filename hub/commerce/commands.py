"""Advisers' commerce commands: catalogue, cart, checkout link, orders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub.commerce.money import Money
from hub.commerce.orders import (
    OrderEvent,
    OrderStatus,
    PaymentTerms,
    event_from_word,
    parse_order_number,
    status_label,
)
from hub.commerce.render import (
    cart_for_customer,
    cart_notice,
    order_time,
    product_card_text,
    search_results,
)
from hub.commerce.service import Shop, order_paid, payment_method, payment_terms
from hub.core.bot import CommandContext, CommandHandler
from hub.core.commands import ChoiceArg, CommandSpec, IntArg, ParsedCommand, RestArg, WordArg
from hub.db import commerce
from hub.db.jobs import conversation_key, enqueue
from hub.db.models import Conversation, Order
from hub.errors import UserError
from hub.i18n import N_, _
from hub.jobs.kinds import CREATE_CHECKOUT

Parsed = ParsedCommand[CommandHandler]
UNKNOWN_SKU = N_("Unknown SKU {sku} — try !catalog WORDS")


class CommerceCommands:
    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    def catalog(self, ctx: CommandContext, parsed: Parsed) -> None:
        query = parsed.value("query", str)
        index = self.shop.index(ctx.tx)
        found = index.search(query, limit=10)
        if not found:
            raise UserError(_("No product matches “{query}”.").format(query=query))
        text, html = search_results(found, self.shop.locale, query=query)
        ctx.reply(text, html)

    def send_product(self, ctx: CommandContext, parsed: Parsed) -> None:
        conversation = ctx.customer_conversation()
        shop = self.shop
        product = shop.index(ctx.tx).get(parsed.value("sku", str))
        if product is None:
            raise UserError(_(UNKNOWN_SKU).format(sku=parsed.value("sku", str)))
        text = product_card_text(product, shop.locale)
        if product.product_url:
            code = commerce.create_short_link(ctx.tx, product.product_url, conversation.id)
            text = text.replace(product.product_url, shop.short_url(code))
        shop.tell_customer(
            ctx.tx,
            conversation,
            text,
            f"product:{ctx.event_id}",
            sender_mxid=ctx.sender,
            image_url=product.image_url,
            image_name=f"{product.sku}.jpg",
            product_sku=product.sku,
        )
        ctx.reply(_("Sent {product} to the customer.").format(product=product.name))

    def _change_cart(self, ctx: CommandContext, change: Callable[[Any], Any]) -> None:
        conversation = ctx.customer_conversation()
        shop = self.shop
        cart = commerce.get_cart(ctx.tx, conversation.id, shop.currency)
        cart = change(cart)
        shop.save_cart(ctx.tx, conversation, cart)
        text, html = cart_notice(cart, shop.locale)
        ctx.reply(text, html)

    def cart_add(self, ctx: CommandContext, parsed: Parsed) -> None:
        sku, qty = parsed.value("sku", str), parsed.value("qty", int)

        def change(cart: Any) -> Any:
            product = self.shop.index(ctx.tx).get(sku)
            if product is None:
                raise UserError(_(UNKNOWN_SKU).format(sku=sku))
            return cart.add(product, qty, self.shop.commerce.max_quantity)

        self._change_cart(ctx, change)

    def cart_remove(self, ctx: CommandContext, parsed: Parsed) -> None:
        sku, qty = parsed.value("sku", str), parsed.optional_value("qty", int)

        def change(cart: Any) -> Any:
            return cart.remove(sku, qty)

        self._change_cart(ctx, change)

    def cart_show(self, ctx: CommandContext, parsed: Parsed) -> None:
        def change(cart: Any) -> Any:
            return cart

        self._change_cart(ctx, change)

    def cart_clear(self, ctx: CommandContext, parsed: Parsed) -> None:
        def change(cart: Any) -> Any:
            return cart.clear()

        self._change_cart(ctx, change)

    def pay(self, ctx: CommandContext, parsed: Parsed) -> None:
        """The cart becomes a pending order (and the cart is empty again); the checkout link
        is made by a job. `!pay ORDER` sends an open order's link again."""
        conversation = ctx.customer_conversation()
        shop = self.shop
        again = parsed.optional_value("order", str)
        if again is not None:
            self._send_link_again(ctx, self._order(ctx, again))
            return
        cart = commerce.get_cart(ctx.tx, conversation.id, shop.currency)
        if cart.is_empty:
            raise UserError(self._empty_cart_refusal(ctx, conversation))
        order = commerce.create_order(
            ctx.tx,
            conversation_id=conversation.id,
            adviser_mxid=ctx.sender,
            provider=self.shop.commerce.provider,
            cart=cart,
        )
        # Like a shop's draft order: the cart is now the order, so a second !pay cannot
        # silently order the same goods again. The room's cart state says so too.
        shop.save_cart(ctx.tx, conversation, cart.clear())
        enqueue(
            ctx.tx,
            CREATE_CHECKOUT,
            conversation_key(conversation.id),
            {"order_id": order.id},
            str(order.id),
        )
        amount = shop.money(cart.total)
        created = _(
            "Order {number} for {amount} created; the checkout link goes to the customer in a "
            "moment."
        ).format(number=shop.order_number(order), amount=amount)
        ctx.reply(created + "\n" + cart_for_customer(cart, shop.locale))

    def _empty_cart_refusal(self, ctx: CommandContext, conversation: Conversation) -> str:
        """Why `!pay` has nothing to do: after an order was made of the cart, which order
        that is and how its link goes out again."""
        shop = self.shop
        order = commerce.open_order(ctx.tx, conversation.id)
        if order is None:
            return _("The cart is empty — add products with !cart add SKU [QTY]")
        number = shop.order_number(order)
        amount = shop.money(Money(order.total_minor, order.currency))
        if (order.details or {}).get("placed"):
            return _(
                "The cart is empty: it became order {number} ({amount}), which the customer "
                "has placed on the checkout page. Add products with !cart add SKU [QTY] for "
                "a new order."
            ).format(number=number, amount=amount)
        return _(
            "The cart is empty: it became order {number} ({amount}), which is waiting for "
            "payment. To send its checkout link again: !pay {number}. For a new order, add "
            "products with !cart add SKU [QTY]."
        ).format(number=number, amount=amount)

    def _send_link_again(self, ctx: CommandContext, order: Order) -> None:
        shop = self.shop
        number = shop.order_number(order)
        if order.status != OrderStatus.PENDING:
            raise UserError(
                _("Order {number} is {status}: it has no checkout link to send any more.").format(
                    number=number, status=status_label(OrderStatus(order.status))
                )
            )
        if (order.details or {}).get("placed"):
            raise UserError(
                _(
                    "Order {number} was already placed on the checkout page; the customer "
                    "needs no link."
                ).format(number=number)
            )
        conversation = ctx.customer_conversation()
        if order.short_code:
            link = shop.short_url(order.short_code)
            shop.tell_customer(
                ctx.tx,
                conversation,
                shop.checkout_link_text(order, link),
                f"checkout-link:{order.id}:{ctx.event_id}",
                sender_mxid=ctx.sender,
            )
            ctx.reply(
                _("Checkout link for order {number} sent again: {link}").format(
                    number=number, link=link
                )
            )
            return
        # No link yet (being made, or making it failed): make it again.
        enqueue(
            ctx.tx,
            CREATE_CHECKOUT,
            conversation_key(conversation.id),
            {"order_id": order.id},
            f"{order.id}:{ctx.event_id}",
        )
        ctx.reply(
            _("The checkout link for order {number} goes to the customer in a moment.").format(
                number=number
            )
        )

    def _order(self, ctx: CommandContext, text: str) -> Order:
        conversation = ctx.customer_conversation()
        try:
            order_id = parse_order_number(text, prefix=self.shop.commerce.order_number_prefix)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        order = ctx.tx.orm.get(Order, order_id)
        if order is None or order.conversation_id != conversation.id:
            raise UserError(
                _("No order {number} in this conversation — see !orders").format(number=text)
            )
        return order

    def order_update(self, ctx: CommandContext, parsed: Parsed) -> None:
        order = self._order(ctx, parsed.value("order", str))
        event = event_from_word(parsed.value("status", str))
        rest = parsed.optional_value("text", str) or ""
        tracking = (
            rest if event is OrderEvent.SHIP and rest.startswith(("http://", "https://")) else None
        )
        if tracking:
            code = commerce.create_short_link(ctx.tx, tracking, order.conversation_id, order.id)
            tracking = self.shop.short_url(code)
        changed = self.shop.apply(
            ctx.tx,
            order,
            event,
            source=_("by {adviser}").format(adviser=ctx.sender),
            detail="" if tracking else rest,
            tracking_url=tracking,
            sender_mxid=ctx.sender,
        )
        number = self.shop.order_number(order)
        status = status_label(OrderStatus(order.status))
        if event is OrderEvent.PAY and not changed:
            # Paid is paid, whatever happened to the goods since.
            status = status_label(OrderStatus.PAID)
        if not changed:
            ctx.reply(_("Order {number} is already {status}.").format(number=number, status=status))
        elif event is OrderEvent.PAY and order.status != OrderStatus.PAID:
            ctx.reply(
                _("The invoice of order {number} is now paid; the order stays {status}.").format(
                    number=number, status=status
                )
            )
        else:
            ctx.reply(_("Order {number} is now {status}.").format(number=number, status=status))

    def orders(self, ctx: CommandContext, parsed: Parsed) -> None:
        conversation = ctx.customer_conversation()
        shop = self.shop
        rows = commerce.orders_of(ctx.tx, conversation.id)
        if not rows:
            ctx.reply(_("No orders in this conversation yet."))
            return
        lines = [
            " — ".join(
                [
                    shop.order_number(o),
                    self._status_text(o),
                    shop.money(Money(o.total_minor, o.currency)),
                    self._how_paid(o),
                    order_time(o.created_at, shop.shop.timezone, shop.locale),
                ]
            )
            for o in rows
        ]
        ctx.reply(_("Orders:") + "\n" + "\n".join(lines))

    @staticmethod
    def _status_text(order: Order) -> str:
        """ "shipped", or for an order on invoice "shipped, invoice open" / "…, invoice paid"."""
        status = OrderStatus(order.status)
        label = status_label(status)
        if payment_terms(order) is not PaymentTerms.INVOICE or status in (
            OrderStatus.PAID,
            OrderStatus.CANCELLED,
            OrderStatus.EXPIRED,
        ):
            return label
        if order_paid(order):
            return _("{status}, invoice paid").format(status=label)
        return _("{status}, invoice open").format(status=label)

    @staticmethod
    def _how_paid(order: Order) -> str:
        """The provider, with the method chosen on the built-in checkout page."""
        method = payment_method(order)
        if method is None:
            return order.provider
        from hub.commerce.providers.builtin import method_label

        return f"{order.provider} ({method_label(method)})"

    def specs(self) -> list[CommandSpec[CommandHandler]]:
        qty = IntArg("qty", min_value=1, optional=True, default=1)
        specs: list[CommandSpec[CommandHandler]] = [
            CommandSpec(
                "catalog",
                self.catalog,
                aliases=("p",),
                args=(RestArg("query"),),
                help=N_("Search the catalogue"),
            ),
            CommandSpec(
                "send",
                self.send_product,
                args=(WordArg("sku"),),
                help=N_("Send a product card to the customer"),
            ),
            CommandSpec("cart", self.cart_show, help=N_("Show the cart")),
            CommandSpec(
                "cart add",
                self.cart_add,
                args=(WordArg("sku"), qty),
                help=N_("Add a product to the cart"),
            ),
            CommandSpec(
                "cart remove",
                self.cart_remove,
                args=(WordArg("sku"), IntArg("qty", min_value=1, optional=True)),
                help=N_("Remove a product (or some of it) from the cart"),
            ),
            CommandSpec("cart clear", self.cart_clear, help=N_("Empty the cart")),
            CommandSpec(
                "pay",
                self.pay,
                args=(WordArg("order", metavar="ORDER_ID", optional=True),),
                help=N_("Send the customer a checkout link for the cart"),
            ),
            CommandSpec(
                "order",
                self.order_update,
                args=(
                    WordArg("order", metavar="ORDER_ID"),
                    ChoiceArg("status", choices=("paid", "shipped", "delivered", "cancelled")),
                    RestArg("text", optional=True, metavar="TRACKING_URL|REASON"),
                ),
                help=N_("Update an order and tell the customer"),
            ),
            CommandSpec("orders", self.orders, help=N_("List this conversation's orders")),
        ]
        return specs
