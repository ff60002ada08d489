"""Advisers' commerce commands: catalogue, cart, checkout link, orders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.commerce.money import Money
from hub.commerce.orders import OrderEvent, event_from_word, parse_order_number
from hub.commerce.render import (
    cart_for_customer,
    cart_notice,
    product_card_text,
    search_results,
)
from hub.commerce.service import CREATE_CHECKOUT, Shop
from hub.core.bot import CommandContext, CommandHandler
from hub.core.commands import ChoiceArg, CommandSpec, IntArg, ParsedCommand, RestArg, WordArg
from hub.core.outbox import enqueue
from hub.core.router import conversation_key
from hub.db import commerce_repo
from hub.db.models import Conversation, Order
from hub.errors import UserError

if TYPE_CHECKING:
    from hub.hub import Hub

Parsed = ParsedCommand[CommandHandler]


def _conversation(ctx: CommandContext) -> Conversation:
    if ctx.conversation is None:
        raise UserError("This command works in a customer's room only.")
    return ctx.conversation


def _shop(ctx: CommandContext) -> Shop:
    return ctx.hub.shop


async def catalog(ctx: CommandContext, parsed: Parsed) -> None:
    query = parsed.value("query", str)
    index = await _shop(ctx).index(ctx.session)
    found = index.search(query, limit=10)
    if not found:
        raise UserError(f"No product matches “{query}”.")
    text, html = search_results(found, _shop(ctx).locale, query=query)
    ctx.reply(text, html)


async def send_product(ctx: CommandContext, parsed: Parsed) -> None:
    conversation = _conversation(ctx)
    shop = _shop(ctx)
    product = (await shop.index(ctx.session)).get(parsed.value("sku", str))
    if product is None:
        raise UserError(f"Unknown SKU {parsed.value('sku', str)} — try !catalog WORDS")
    text = product_card_text(product, shop.locale)
    if product.product_url:
        code = await commerce_repo.create_short_link(
            ctx.session, product.product_url, conversation.id
        )
        text = text.replace(product.product_url, shop.short_url(code))
    await shop.tell_customer(
        ctx.session,
        conversation,
        text,
        f"product:{ctx.event_id}",
        sender_mxid=ctx.sender,
        image_url=product.image_url,
        image_name=f"{product.sku}.jpg",
        product_sku=product.sku,
    )
    ctx.reply(f"Sent {product.name} to the customer.")


async def _change_cart(ctx: CommandContext, change: Any) -> None:
    conversation = _conversation(ctx)
    shop = _shop(ctx)
    cart = await commerce_repo.get_cart(ctx.session, conversation.id, shop.currency)
    cart = await change(cart, shop)
    await shop.save_cart(ctx.session, conversation, cart)
    text, html = cart_notice(cart, shop.locale)
    ctx.reply(text, html)


async def cart_add(ctx: CommandContext, parsed: Parsed) -> None:
    sku, qty = parsed.value("sku", str), parsed.value("qty", int)

    async def change(cart: Any, shop: Shop) -> Any:
        product = (await shop.index(ctx.session)).get(sku)
        if product is None:
            raise UserError(f"Unknown SKU {sku} — try !catalog WORDS")
        return cart.add(product, qty, ctx.hub.config.commerce.max_quantity)

    await _change_cart(ctx, change)


async def cart_remove(ctx: CommandContext, parsed: Parsed) -> None:
    sku, qty = parsed.value("sku", str), parsed.optional_value("qty", int)

    async def change(cart: Any, shop: Shop) -> Any:
        return cart.remove(sku, qty)

    await _change_cart(ctx, change)


async def cart_show(ctx: CommandContext, parsed: Parsed) -> None:
    async def change(cart: Any, shop: Shop) -> Any:
        return cart

    await _change_cart(ctx, change)


async def cart_clear(ctx: CommandContext, parsed: Parsed) -> None:
    async def change(cart: Any, shop: Shop) -> Any:
        return cart.clear()

    await _change_cart(ctx, change)


async def pay(ctx: CommandContext, parsed: Parsed) -> None:
    """A pending order for the cart; the checkout link is made by an outbox job."""
    conversation = _conversation(ctx)
    shop = _shop(ctx)
    cart = await commerce_repo.get_cart(ctx.session, conversation.id, shop.currency)
    if cart.is_empty:
        raise UserError("The cart is empty — add products with !cart add SKU [QTY]")
    order = await commerce_repo.create_order(
        ctx.session,
        conversation_id=conversation.id,
        adviser_mxid=ctx.sender,
        provider=ctx.hub.config.commerce.provider,
        cart=cart,
    )
    await enqueue(
        ctx.session,
        CREATE_CHECKOUT,
        conversation_key(conversation.id),
        {"order_id": order.id},
        f"checkout:{order.id}",
    )
    amount = shop.money(cart.total)
    ctx.reply(
        f"Order {shop.order_number(order)} for {amount} created; "
        "the checkout link goes to the customer in a moment.\n"
        + cart_for_customer(cart, shop.locale)
    )


async def _order(ctx: CommandContext, text: str) -> Order:
    conversation = _conversation(ctx)
    try:
        order_id = parse_order_number(text, prefix=ctx.hub.config.commerce.order_number_prefix)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    order = await ctx.session.get(Order, order_id)
    if order is None or order.conversation_id != conversation.id:
        raise UserError(f"No order {text} in this conversation — see !orders")
    return order


async def order_update(ctx: CommandContext, parsed: Parsed) -> None:
    order = await _order(ctx, parsed.value("order", str))
    event = event_from_word(parsed.value("status", str))
    rest = parsed.optional_value("text", str) or ""
    tracking = (
        rest if event is OrderEvent.SHIP and rest.startswith(("http://", "https://")) else None
    )
    if tracking:
        code = await commerce_repo.create_short_link(
            ctx.session, tracking, order.conversation_id, order.id
        )
        tracking = ctx.hub.shop.short_url(code)
    changed = await _shop(ctx).apply(
        ctx.session,
        order,
        event,
        source=f"by {ctx.sender}",
        detail="" if tracking else rest,
        tracking_url=tracking,
        sender_mxid=ctx.sender,
    )
    number = _shop(ctx).order_number(order)
    ctx.reply(f"Order {number} is {order.status}" + ("" if changed else " already"))


async def orders(ctx: CommandContext, parsed: Parsed) -> None:
    conversation = _conversation(ctx)
    shop = _shop(ctx)
    rows = await commerce_repo.orders_of(ctx.session, conversation.id)
    if not rows:
        ctx.reply("No orders in this conversation yet.")
        return
    lines = [
        f"{shop.order_number(o)} — {o.status} — {shop.money(Money(o.total_minor, o.currency))}"
        f" — {o.provider} — {o.created_at:%Y-%m-%d %H:%M}"
        for o in rows
    ]
    ctx.reply("Orders:\n" + "\n".join(lines))


def register_commands(hub: Hub) -> None:
    qty = IntArg("qty", min_value=1, optional=True, default=1)
    specs: list[CommandSpec[CommandHandler]] = [
        CommandSpec(
            "catalog",
            catalog,
            aliases=("p",),
            args=(RestArg("query"),),
            help="Search the catalogue",
        ),
        CommandSpec(
            "send", send_product, args=(WordArg("sku"),), help="Send a product card to the customer"
        ),
        CommandSpec("cart", cart_show, help="Show the cart"),
        CommandSpec(
            "cart add", cart_add, args=(WordArg("sku"), qty), help="Add a product to the cart"
        ),
        CommandSpec(
            "cart remove",
            cart_remove,
            args=(WordArg("sku"), IntArg("qty", min_value=1, optional=True)),
            help="Remove a product (or some of it) from the cart",
        ),
        CommandSpec("cart clear", cart_clear, help="Empty the cart"),
        CommandSpec("pay", pay, help="Send the customer a checkout link for the cart"),
        CommandSpec(
            "order",
            order_update,
            args=(
                WordArg("order", metavar="ORDER_ID"),
                ChoiceArg("status", choices=("paid", "shipped", "delivered", "cancelled")),
                RestArg("text", optional=True, metavar="TRACKING_URL|REASON"),
            ),
            help="Update an order and tell the customer",
        ),
        CommandSpec("orders", orders, help="List this conversation's orders"),
    ]
    for spec in specs:
        hub.commands.register(spec)
