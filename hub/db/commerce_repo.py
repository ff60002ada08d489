"""Repositories of the commerce tables: catalogue, carts, orders, payment events, links."""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.commerce.cart import Cart
from hub.commerce.catalogue import Product
from hub.commerce.money import Money
from hub.db.models import CartRow, Order, PaymentEventRow, ShortLink, utcnow
from hub.db.models import Product as ProductRow
from hub.db.upsert import insert_ignore

_CODE_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


async def replace_catalogue(s: AsyncSession, products: list[Product]) -> int:
    """The new catalogue replaces the old one in one transaction (no half-imported state)."""
    await s.execute(delete(ProductRow))
    now = utcnow()
    s.add_all(
        ProductRow(
            sku=p.sku,
            name=p.name,
            price_minor=p.price.minor,
            currency=p.price.currency,
            vat_rate=str(p.vat_rate),
            variant_id=p.variant_id,
            image_url=p.image_url,
            product_url=p.product_url,
            in_stock=p.in_stock,
            updated_at=now,
        )
        for p in products
    )
    await s.flush()
    return len(products)


async def load_products(s: AsyncSession) -> list[Product]:
    rows = await s.scalars(select(ProductRow).order_by(ProductRow.sku))
    return [
        Product(
            sku=r.sku,
            name=r.name,
            price=Money(r.price_minor, r.currency),
            vat_rate=Decimal(r.vat_rate),
            variant_id=r.variant_id,
            image_url=r.image_url,
            product_url=r.product_url,
            in_stock=r.in_stock,
        )
        for r in rows
    ]


async def catalogue_version(s: AsyncSession) -> tuple[int, str]:
    """Changes whenever the catalogue is replaced, so cached search indexes can notice."""
    count, newest = (
        await s.execute(select(func.count(ProductRow.sku), func.max(ProductRow.updated_at)))
    ).one()
    return int(count or 0), str(newest)


async def get_cart(s: AsyncSession, conversation_id: int, currency: str) -> Cart:
    row = await s.get(CartRow, conversation_id)
    return Cart.from_json(row.data) if row else Cart(currency, ())


async def save_cart(s: AsyncSession, conversation_id: int, cart: Cart) -> None:
    row = await s.get(CartRow, conversation_id)
    if row is None:
        s.add(CartRow(conversation_id=conversation_id, data=cart.to_json(), updated_at=utcnow()))
    else:
        row.data = cart.to_json()
        row.updated_at = utcnow()


async def create_order(
    s: AsyncSession,
    *,
    conversation_id: int,
    adviser_mxid: str,
    provider: str,
    cart: Cart,
) -> Order:
    order = Order(
        conversation_id=conversation_id,
        adviser_mxid=adviser_mxid,
        status="pending",
        provider=provider,
        reference=f"hub-{secrets.token_hex(10)}",
        cart=cart.to_json(),
        total_minor=cart.total.minor,
        currency=cart.currency,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    s.add(order)
    await s.flush()
    return order


async def order_by_reference(s: AsyncSession, reference: str) -> Order | None:
    return await s.scalar(select(Order).where(Order.reference == reference))


async def order_by_provider_ref(s: AsyncSession, provider: str, ref: str) -> Order | None:
    return await s.scalar(
        select(Order).where(Order.provider == provider, Order.provider_ref == ref)
    )


async def orders_of(s: AsyncSession, conversation_id: int, limit: int = 20) -> list[Order]:
    rows = await s.scalars(
        select(Order)
        .where(Order.conversation_id == conversation_id)
        .order_by(Order.id.desc())
        .limit(limit)
    )
    return list(rows)


async def first_payment_event(
    s: AsyncSession, provider: str, event_id: str, order_id: int | None, kind: str
) -> bool:
    """Record a provider event; False when it was processed before (a redelivery)."""
    return await insert_ignore(
        s,
        PaymentEventRow,
        {
            "provider": provider,
            "provider_event_id": event_id[:255],
            "order_id": order_id,
            "kind": kind,
            "received_at": utcnow(),
        },
        ["provider", "provider_event_id"],
    )


async def create_short_link(
    s: AsyncSession, url: str, conversation_id: int | None, order_id: int | None = None
) -> str:
    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))
    s.add(
        ShortLink(
            code=code,
            url=url,
            conversation_id=conversation_id,
            order_id=order_id,
            created_at=utcnow(),
        )
    )
    await s.flush()
    return code


async def click_short_link(s: AsyncSession, code: str) -> str | None:
    link = await s.get(ShortLink, code)
    if link is None:
        return None
    now = utcnow()
    values: dict[str, Any] = {"clicks": ShortLink.clicks + 1, "last_click_at": now}
    if link.first_click_at is None:
        values["first_click_at"] = now
    await s.execute(update(ShortLink).where(ShortLink.code == code).values(**values))
    return link.url
