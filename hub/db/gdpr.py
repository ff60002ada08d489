"""A customer's rows for export and erasure (GDPR), and the conversations retention erases.
Units of work (see hub.db.database).

Which tables hold a customer's rows and what an erasure does with each is decided in
hub.consent.gdpr (pure); here is how the rows are found (`ROW_FILTERS`, one per exported
table), read, deleted and anonymised. An erasure's database part is one unit (`erase`): it
reads the rows again in its own transaction and changes them all or none.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.sql import ColumnElement

from hub.consent.gdpr import (
    DECIDED,
    EMPTIED_META,
    ERASED_GHOST_PREFIX,
    ERASED_PREFIX,
    EXPORTED,
    ByConversation,
    ByCustomer,
    ByGhost,
    ByIdentity,
    ByPhone,
    ByRoom,
    Candidate,
    ConversationFacts,
    CustomerFacts,
    CustomerRef,
    ErasurePlan,
    IdentityFacts,
    OrderFacts,
    OrdersPolicy,
    References,
    Snapshot,
    anonymised_details,
    job_refers,
    plan_erasure,
)
from hub.db.models import (
    BroadcastRecipient,
    CartRow,
    ChannelIdentity,
    ConsentImage,
    ConsentRequest,
    Conversation,
    Customer,
    Erasure,
    Exchange,
    InboundSpan,
    MediaFile,
    Message,
    MissedConversation,
    NewsletterOptin,
    Order,
    OutboxItem,
    PaymentEventRow,
    ShortLink,
    Timer,
    WebchatVisitor,
    table,
    utcnow,
)

if TYPE_CHECKING:
    from hub.db.database import Tx

CU = table(Customer)
CI = table(ChannelIdentity)
CV = table(Conversation)
M = table(Message)
MF = table(MediaFile)
O = table(Order)  # noqa: E741
PE = table(PaymentEventRow)
SL = table(ShortLink)
CR = table(ConsentRequest)
CIM = table(ConsentImage)
OB = table(OutboxItem)

# Large id lists go to the database in slices (SQLite's limit on parameters).
CHUNK = 500
# Columns an export leaves out: a secret's hash is no information about the customer.
EXPORT_OMITS: Mapping[str, tuple[str, ...]] = {"webchat_visitors": ("token_hash",)}


@dataclass(frozen=True)
class Ids:
    """The ids the rows of a customer are found by."""

    customers: frozenset[int]
    identities: frozenset[int]
    conversations: frozenset[int]
    orders: frozenset[int]
    visitors: frozenset[str]  # the web chat's visitor ids (its identities' external ids)
    files: frozenset[str]  # the hub's media files the messages name


def _in_conversations(t: Table) -> Callable[[Ids], ColumnElement[bool]]:
    return lambda ids: t.c.conversation_id.in_(ids.conversations)


def _in_identities(t: Table) -> Callable[[Ids], ColumnElement[bool]]:
    return lambda ids: t.c.identity_id.in_(ids.identities)


def _messages_of(ids: Ids) -> Any:
    return select(M.c.id).where(M.c.conversation_id.in_(ids.conversations))


# The rows of each table of hub.consent.gdpr.EXPORTED that belong to the customer.
ROW_FILTERS: Mapping[str, Callable[[Ids], ColumnElement[bool]]] = {
    "customers": lambda ids: CU.c.id.in_(ids.customers),
    "channel_identities": lambda ids: CI.c.id.in_(ids.identities),
    "webchat_visitors": lambda ids: table(WebchatVisitor).c.visitor_id.in_(ids.visitors),
    "conversations": lambda ids: CV.c.id.in_(ids.conversations),
    "messages": _in_conversations(M),
    "media_files": lambda ids: or_(
        MF.c.conversation_id.in_(ids.conversations), MF.c.id.in_(ids.files)
    ),
    "carts": _in_conversations(table(CartRow)),
    "orders": _in_conversations(O),
    "payment_events": lambda ids: PE.c.order_id.in_(ids.orders),
    "short_links": lambda ids: or_(
        SL.c.conversation_id.in_(ids.conversations), SL.c.order_id.in_(ids.orders)
    ),
    "timers": _in_conversations(table(Timer)),
    "missed_conversations": _in_conversations(table(MissedConversation)),
    "consent_requests": _in_conversations(CR),
    "consent_images": lambda ids: or_(
        CIM.c.message_id.in_(_messages_of(ids)),
        CIM.c.request_id.in_(select(CR.c.id).where(CR.c.conversation_id.in_(ids.conversations))),
    ),
    "newsletter_optins": _in_identities(table(NewsletterOptin)),
    "broadcast_recipients": _in_identities(table(BroadcastRecipient)),
    # The KPIs' bookkeeping (hub.db.exchanges): when the customer wrote and was answered.
    "exchanges": _in_conversations(table(Exchange)),
    "inbound_spans": _in_conversations(table(InboundSpan)),
}
# Deleted whole, children before parents (the decided tables follow, by hand).
DELETE_ORDER = (
    "exchanges",
    "inbound_spans",
    "consent_images",
    "consent_requests",
    "missed_conversations",
    "timers",
    "short_links",
    "carts",
    "media_files",
    "messages",
    "broadcast_recipients",
    "newsletter_optins",
    "webchat_visitors",
)
TABLES: Mapping[str, Table] = {
    t.name: t
    for t in (
        CU,
        CI,
        table(WebchatVisitor),
        CV,
        M,
        MF,
        table(CartRow),
        O,
        PE,
        SL,
        table(Timer),
        table(MissedConversation),
        CR,
        CIM,
        table(NewsletterOptin),
        table(BroadcastRecipient),
        table(Exchange),
        table(InboundSpan),
    )
}
assert set(ROW_FILTERS) == set(EXPORTED) == set(TABLES) == set(DELETE_ORDER) | set(DECIDED)


# -- naming a customer ----------------------------------------------------------------------


def find_customers(tx: Tx, ref: CustomerRef) -> list[Candidate]:
    """The customers a name matches (an anonymised identity matches only customer:<id>)."""
    where: ColumnElement[bool]
    if isinstance(ref, ByCustomer):
        exists = tx.conn.execute(select(CU.c.id).where(CU.c.id == ref.customer_id)).first()
        return [_candidate(tx, ref.customer_id)] if exists else []
    if isinstance(ref, ByRoom):
        where = CI.c.id.in_(select(CV.c.identity_id).where(CV.c.room_id == ref.room_id))
    elif isinstance(ref, ByConversation):
        where = CI.c.id.in_(select(CV.c.identity_id).where(CV.c.id == ref.conversation_id))
    elif isinstance(ref, ByGhost):
        where = CI.c.ghost_localpart == ref.localpart
    elif isinstance(ref, ByIdentity):
        where = CI.c.external_id == ref.external_id
        if ref.channel is not None:
            where = (CI.c.channel == ref.channel) & where
    else:
        assert isinstance(ref, ByPhone)
        number = (
            CI.c.external_id.endswith(ref.digits, autoescape=True)
            if ref.national
            else CI.c.external_id == ref.digits
        )
        where = (CI.c.channel == "whatsapp") & number
    where = where & ~CI.c.external_id.startswith(ERASED_PREFIX, autoescape=True)
    found = tx.conn.execute(select(CI.c.customer_id).distinct().where(where)).scalars()
    return [_candidate(tx, customer_id) for customer_id in sorted(found)]


def _candidate(tx: Tx, customer_id: int) -> Candidate:
    rows = tx.conn.execute(
        select(CI.c.channel, CI.c.external_id, CI.c.display_name, CV.c.room_id)
        .outerjoin(CV, CV.c.identity_id == CI.c.id)
        .where(CI.c.customer_id == customer_id)
        .order_by(CI.c.id)
    ).all()
    described = []
    for channel, external_id, name, room_id in rows:
        text = f"{channel}:{external_id}"
        if name:
            text += f" ({name})"
        if room_id:
            text += f" in {room_id}"
        described.append(text)
    return Candidate(customer_id, tuple(described) or ("no identities",))


def identities_of(tx: Tx, customer_id: int) -> list[int]:
    return list(
        tx.conn.execute(
            select(CI.c.id).where(CI.c.customer_id == customer_id).order_by(CI.c.id)
        ).scalars()
    )


# -- retention ------------------------------------------------------------------------------


def inactive_identities(tx: Tx, before: datetime) -> list[int]:
    """The identities whose conversation's last message (or, without messages, its start)
    is older than `before`; conversations already erased and kept for orders are not."""
    last = (
        select(M.c.conversation_id, func.max(M.c.created_at).label("at"))
        .group_by(M.c.conversation_id)
        .subquery()
    )
    query = (
        select(CV.c.identity_id)
        .join(CI, CI.c.id == CV.c.identity_id)
        .outerjoin(last, last.c.conversation_id == CV.c.id)
        .where(~CI.c.external_id.startswith(ERASED_PREFIX, autoescape=True))
        .where(func.coalesce(last.c.at, CV.c.created_at) < before)
        .order_by(CV.c.id)
    )
    return list(tx.conn.execute(query).scalars())


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gathered:
    snapshot: Snapshot
    ids: Ids
    refs: References
    outbox: tuple[int, ...]  # the jobs (any status) that refer to the customer


def _in_chunks(values: Iterable[Any]) -> Iterator[list[Any]]:
    items = list(values)
    for at in range(0, len(items), CHUNK):
        yield items[at : at + CHUNK]


def _mxcs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _mxcs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _mxcs(item)
    elif isinstance(value, str) and value.startswith("mxc://"):
        yield value


def gather(tx: Tx, identity_ids: Iterable[int], customer_ids: Iterable[int] = ()) -> Gathered:
    """Everything the database holds of some identities (and customers, should one have
    no identity left), for an erasure's plan."""
    conn = tx.conn
    wanted = sorted(set(identity_ids))
    identities = [
        IdentityFacts(
            r.id,
            r.customer_id,
            r.channel,
            r.external_id,
            r.ghost_localpart,
            r.display_name,
            r.ghost_profile_name,
        )
        for r in conn.execute(select(CI).where(CI.c.id.in_(wanted)).order_by(CI.c.id))
    ]
    identity_ids_ = frozenset(i.id for i in identities)
    customer_ids = frozenset(i.customer_id for i in identities) | frozenset(customer_ids)
    others = set(
        conn.execute(
            select(CI.c.customer_id).where(
                CI.c.customer_id.in_(customer_ids), CI.c.id.not_in(identity_ids_)
            )
        ).scalars()
    )
    customers = [
        CustomerFacts(r.id, r.display_name, r.id in others)
        for r in conn.execute(select(CU).where(CU.c.id.in_(customer_ids)).order_by(CU.c.id))
    ]
    conversations = [
        ConversationFacts(
            r.id,
            r.identity_id,
            r.room_id,
            r.room_name,
            r.last_inbound_at is not None or r.last_adviser_reply_at is not None,
            r.meta,
        )
        for r in conn.execute(
            select(CV).where(CV.c.identity_id.in_(identity_ids_)).order_by(CV.c.id)
        )
    ]
    conversation_ids = frozenset(c.id for c in conversations)
    orders = [
        OrderFacts(r.id, r.conversation_id, r.details, r.checkout_url, r.short_code)
        for r in conn.execute(
            select(O).where(O.c.conversation_id.in_(conversation_ids)).order_by(O.c.id)
        )
    ]
    order_ids = frozenset(o.id for o in orders)
    message_ids: set[int] = set()
    event_ids: set[str] = set()
    mxcs: set[str] = set()
    files: set[str] = set()
    for mid, event_id, media in conn.execute(
        select(M.c.id, M.c.matrix_event_id, M.c.media).where(
            M.c.conversation_id.in_(conversation_ids)
        )
    ):
        message_ids.add(mid)
        if event_id:
            event_ids.add(event_id)
        if isinstance(media, dict):
            mxcs.update(_mxcs(media))
            if isinstance(media.get("media_id"), str):
                files.add(media["media_id"])
    visitors = frozenset(
        i.external_id for i in identities if i.channel == "webchat" and not i.anonymised
    )
    ids = Ids(customer_ids, identity_ids_, conversation_ids, order_ids, visitors, frozenset(files))
    file_rows = conn.execute(select(MF.c.id, MF.c.mxc_uri).where(ROW_FILTERS["media_files"](ids)))
    for file_id, mxc in file_rows:
        files.add(file_id)
        if mxc:
            mxcs.add(mxc)
    # Files named by messages but already gone from the table are gone from the disk too,
    # or never were: deleting them again is harmless.
    rows = {
        name: int(
            conn.execute(
                select(func.count()).select_from(TABLES[name]).where(ROW_FILTERS[name](ids))
            ).scalar_one()
        )
        for name in DELETE_ORDER
    }
    payment_events = {
        order_id: int(n)
        for order_id, n in conn.execute(
            select(PE.c.order_id, func.count())
            .where(PE.c.order_id.in_(order_ids))
            .group_by(PE.c.order_id)
        )
    }
    ghosts = frozenset(i.ghost_localpart for i in identities if not i.anonymised)
    refs = References(
        conversations=conversation_ids,
        identities=identity_ids_,
        messages=frozenset(message_ids),
        orders=order_ids,
        rooms=frozenset(c.room_id for c in conversations if c.room_id),
        values=frozenset(event_ids | mxcs),
        ghosts=frozenset(f"@{g}:" for g in ghosts),
    )
    keys = refs.ordering_keys()
    outbox = tuple(
        job_id
        for job_id, key, payload in conn.execute(select(OB.c.id, OB.c.ordering_key, OB.c.payload))
        if job_refers(key, payload, refs, keys)
    )
    rows["outbox"] = len(outbox)
    snapshot = Snapshot(
        customers=tuple(customers),
        identities=tuple(identities),
        conversations=tuple(conversations),
        orders=tuple(orders),
        payment_events=payment_events,
        rows=rows,
        files=tuple(sorted(files)),
        mxcs=tuple(sorted(mxcs)),
    )
    return Gathered(snapshot, ids, refs, outbox)


def snapshot(tx: Tx, identity_ids: Iterable[int], customer_ids: Iterable[int] = ()) -> Snapshot:
    return gather(tx, identity_ids, customer_ids).snapshot


def export_rows(tx: Tx, customer_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every row of the customer, per table of hub.consent.gdpr.EXPORTED, in id order."""
    ids = gather(tx, identities_of(tx, customer_id), [customer_id]).ids
    out: dict[str, list[dict[str, Any]]] = {}
    for name in EXPORTED:
        t = TABLES[name]
        omit = EXPORT_OMITS.get(name, ())
        query = select(t).where(ROW_FILTERS[name](ids)).order_by(*t.primary_key.columns)
        out[name] = [
            {k: v for k, v in row._mapping.items() if k not in omit}
            for row in tx.conn.execute(query)
        ]
    return out


# -- erasing --------------------------------------------------------------------------------


def erase(
    tx: Tx,
    identity_ids: Iterable[int],
    customer_ids: Iterable[int],
    orders: OrdersPolicy,
    domain: str,
    reason: str,
    done: Mapping[str, int],
) -> ErasurePlan:
    """Delete and anonymise the identities' rows as planned (read again here, so what
    arrived since the plan was shown goes too) and record the erasure: what was removed,
    never who. `done`: what happened on the homeserver and the disk, for the record. Rows
    already erased change nothing and record nothing."""
    found = gather(tx, identity_ids, customer_ids)
    plan = plan_erasure(found.snapshot, orders, domain)
    if plan.database_untouched and not any(done.values()):
        return plan
    conn, ids = tx.conn, found.ids
    for chunk in _in_chunks(found.outbox):
        conn.execute(delete(OB).where(OB.c.id.in_(chunk)))
    for name in DELETE_ORDER:
        conn.execute(delete(TABLES[name]).where(ROW_FILTERS[name](ids)))
    conn.execute(delete(PE).where(PE.c.order_id.in_(plan.delete_orders)))
    conn.execute(delete(O).where(O.c.id.in_(plan.delete_orders)))
    for order in found.snapshot.orders:
        if order.id in plan.anonymise_orders:
            conn.execute(
                update(O)
                .where(O.c.id == order.id)
                .values(
                    details=anonymised_details(order.details), checkout_url=None, short_code=None
                )
            )
    conn.execute(delete(CV).where(CV.c.id.in_(plan.delete_conversations)))
    conn.execute(
        update(CV)
        .where(CV.c.id.in_(plan.empty_conversations))
        .values(
            room_id=None,
            room_name=None,
            last_inbound_at=None,
            last_adviser_reply_at=None,
            meta=dict(EMPTIED_META),
        )
    )
    conn.execute(delete(CI).where(CI.c.id.in_(plan.delete_identities)))
    for identity in found.snapshot.identities:
        if identity.id in plan.anonymise_identities:
            values: dict[str, Any] = {"display_name": None, "ghost_profile_name": None}
            if not identity.anonymised:
                values["external_id"] = ERASED_PREFIX + secrets.token_hex(12)
                values["ghost_localpart"] = ERASED_GHOST_PREFIX + secrets.token_hex(12)
            conn.execute(update(CI).where(CI.c.id == identity.id).values(**values))
    conn.execute(delete(CU).where(CU.c.id.in_(plan.delete_customers)))
    conn.execute(update(CU).where(CU.c.id.in_(plan.anonymise_customers)).values(display_name=None))
    counts = {"deleted": plan.deleted(), "anonymised": plan.anonymised(), **done}
    conn.execute(table(Erasure).insert().values(reason=reason, counts=counts, erased_at=utcnow()))
    return plan


def forget_rooms(tx: Tx, rooms: Iterable[str]) -> int:
    """Delete the jobs naming purged rooms that arrived after the erasure's unit: purging a
    room makes its members leave, and the homeserver pushes those events to the hub."""
    refs = References(rooms=frozenset(rooms))
    keys = refs.ordering_keys()
    jobs = [
        job_id
        for job_id, key, payload in tx.conn.execute(
            select(OB.c.id, OB.c.ordering_key, OB.c.payload)
        )
        if job_refers(key, payload, refs, keys)
    ]
    for chunk in _in_chunks(jobs):
        tx.conn.execute(delete(OB).where(OB.c.id.in_(chunk)))
    return len(jobs)
