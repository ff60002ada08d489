"""What the hub knows about a conversation's customer (hub.advisers.context words it), and
the job that posts it into a new portal. Units of work."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from hub.advisers.context import MAX_ORDERS, CustomerFacts, OrderFact
from hub.commerce.cart import Cart
from hub.commerce.money import Money
from hub.db.jobs import conversation_key, enqueue
from hub.db.models import CartRow, ChannelIdentity, Conversation, Order, table
from hub.jobs.kinds import ADVISERS_CONTEXT

if TYPE_CHECKING:
    from hub.db.database import Tx

log = logging.getLogger(__name__)

CV = table(Conversation)
CI = table(ChannelIdentity)
CR = table(CartRow)
OR = table(Order)


def queue_context_notice(tx: Tx, conversation_id: int) -> None:
    """Post (and pin) the customer's context in their room once it exists. On the
    conversation's key: it runs after the delivery that made the room, so the customer's
    first message comes first. Once per conversation."""
    enqueue(
        tx,
        ADVISERS_CONTEXT,
        conversation_key(conversation_id),
        {"conversation_id": conversation_id},
        str(conversation_id),
    )


def customer_facts(tx: Tx, conversation_id: int) -> CustomerFacts | None:
    """The customer of a conversation: name and channel, their other conversations, open
    carts and orders (over every conversation of the same customer). None: no such
    conversation (erased)."""
    conn = tx.conn
    row = conn.execute(
        select(CV.c.room_id, CV.c.created_at, CI.c.channel, CI.c.display_name, CI.c.customer_id)
        .join(CI, CI.c.id == CV.c.identity_id)
        .where(CV.c.id == conversation_id)
    ).first()
    if row is None:
        return None
    room_id, started_at, channel, name, customer_id = row
    # One conversation per channel identity: the customer's others are on other channels.
    of_customer = (
        select(CV.c.id).join(CI, CI.c.id == CV.c.identity_id).where(CI.c.customer_id == customer_id)
    )
    conversation_ids = [int(cid) for cid in conn.execute(of_customer).scalars()]
    earlier, first_contact = conn.execute(
        select(func.count(), func.min(CV.c.created_at))
        .select_from(CV)
        .where(CV.c.id.in_(conversation_ids), CV.c.id != conversation_id)
    ).one()
    carts = []
    for cart_conversation, data in conn.execute(
        select(CR.c.conversation_id, CR.c.data)
        .where(CR.c.conversation_id.in_(conversation_ids))
        .order_by(CR.c.conversation_id)
    ):
        try:
            cart = Cart.from_json(data)
        except ValueError:
            # Worth a log line, not a broken context notice.
            log.warning("cart of conversation %s cannot be read", cart_conversation)
            continue
        if not cart.is_empty:
            carts.append(cart)
    order_count = conn.execute(
        select(func.count()).select_from(OR).where(OR.c.conversation_id.in_(conversation_ids))
    ).scalar_one()
    orders = tuple(
        OrderFact(int(oid), str(status), Money(int(total), str(currency)), created_at)
        for oid, status, total, currency, created_at in conn.execute(
            select(OR.c.id, OR.c.status, OR.c.total_minor, OR.c.currency, OR.c.created_at)
            .where(OR.c.conversation_id.in_(conversation_ids))
            .order_by(OR.c.created_at.desc(), OR.c.id.desc())
            .limit(MAX_ORDERS)
        )
    )
    return CustomerFacts(
        conversation_id=conversation_id,
        channel=str(channel),
        customer_name=name,
        started_at=started_at,
        earlier=int(earlier or 0),
        first_contact=first_contact if earlier else None,
        carts=tuple(carts),
        orders=orders,
        order_count=int(order_count or 0),
        room_id=room_id,
    )


def customer_of(tx: Tx, conversation_id: int) -> tuple[str, str | None] | None:
    """(channel, the customer's name) of a conversation; None when it is gone (erased)."""
    row = tx.conn.execute(
        select(CI.c.channel, CI.c.display_name)
        .join(CV, CV.c.identity_id == CI.c.id)
        .where(CV.c.id == conversation_id)
    ).first()
    return (str(row[0]), row[1]) if row is not None else None
