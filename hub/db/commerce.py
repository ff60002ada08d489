"""The commerce tables as units of work: catalogue, carts, orders, payment events, links."""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update

from hub.commerce.cart import Cart
from hub.commerce.catalogue import Product
from hub.commerce.money import Money
from hub.db.locks import one_at_a_time
from hub.db.models import CartRow, Order, PaymentEventRow, ShortLink, utcnow
from hub.db.models import Product as ProductRow
from hub.db.upsert import insert_ignore

if TYPE_CHECKING:
    from hub.db.database import Tx

_CODE_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def replace_catalogue(tx: Tx, products: list[Product]) -> int:
    """The new catalogue replaces the old one in one transaction (no half-imported state).
    Hub processes starting together each load the configured file: one after the other."""
    one_at_a_time(tx.conn, "catalogue")
    tx.orm.execute(delete(ProductRow))
    now = utcnow()
    tx.orm.add_all(
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
    tx.orm.flush()
    return len(products)


def load_products(tx: Tx) -> list[Product]:
    rows = tx.orm.scalars(select(ProductRow).order_by(ProductRow.sku))
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


def catalogue_version(tx: Tx) -> tuple[int, str]:
    """Changes whenever the catalogue is replaced, so cached search indexes can notice."""
    count, newest = (
        tx.orm.execute(select(func.count(ProductRow.sku), func.max(ProductRow.updated_at)))
    ).one()
    return int(count or 0), str(newest)


def get_cart(tx: Tx, conversation_id: int, currency: str) -> Cart:
    row = tx.orm.get(CartRow, conversation_id)
    return Cart.from_json(row.data) if row else Cart(currency, ())


def save_cart(tx: Tx, conversation_id: int, cart: Cart) -> None:
    row = tx.orm.get(CartRow, conversation_id)
    if row is None:
        tx.orm.add(
            CartRow(conversation_id=conversation_id, data=cart.to_json(), updated_at=utcnow())
        )
    else:
        row.data = cart.to_json()
        row.updated_at = utcnow()


def create_order(
    tx: Tx,
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
    tx.orm.add(order)
    tx.orm.flush()
    return order


def order_by_reference(tx: Tx, reference: str) -> Order | None:
    return tx.orm.scalar(select(Order).where(Order.reference == reference))


def order_by_provider_ref(tx: Tx, provider: str, ref: str) -> Order | None:
    return tx.orm.scalar(select(Order).where(Order.provider == provider, Order.provider_ref == ref))


def open_order(tx: Tx, conversation_id: int) -> Order | None:
    """The conversation's newest order still waiting for payment (pending), or None."""
    return tx.orm.scalar(
        select(Order)
        .where(Order.conversation_id == conversation_id, Order.status == "pending")
        .order_by(Order.id.desc())
        .limit(1)
    )


def orders_of(tx: Tx, conversation_id: int, limit: int = 20) -> list[Order]:
    rows = tx.orm.scalars(
        select(Order)
        .where(Order.conversation_id == conversation_id)
        .order_by(Order.id.desc())
        .limit(limit)
    )
    return list(rows)


def first_payment_event(
    tx: Tx, provider: str, event_id: str, order_id: int | None, kind: str
) -> bool:
    """Record a provider event; False when it was processed before (a redelivery)."""
    return insert_ignore(
        tx,
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


def create_short_link(
    tx: Tx, url: str, conversation_id: int | None, order_id: int | None = None
) -> str:
    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))
    tx.orm.add(
        ShortLink(
            code=code,
            url=url,
            conversation_id=conversation_id,
            order_id=order_id,
            created_at=utcnow(),
        )
    )
    tx.orm.flush()
    return code


def click_short_link(tx: Tx, code: str) -> str | None:
    link = tx.orm.get(ShortLink, code)
    if link is None:
        return None
    now = utcnow()
    values: dict[str, Any] = {"clicks": ShortLink.clicks + 1, "last_click_at": now}
    if link.first_click_at is None:
        values["first_click_at"] = now
    tx.orm.execute(update(ShortLink).where(ShortLink.code == code).values(**values))
    return link.url
