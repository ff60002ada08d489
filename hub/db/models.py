"""Database tables. The schema is owned by the Alembic migrations in hub/db/migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from hub.core import clock


def utcnow() -> datetime:
    """Now, from the hub's clock (hub.core.clock)."""
    return clock.now()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every engine (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored; use hub.db.models.utcnow()")
        # In UTC: SQLite keeps the wall-clock digits only, and compares them as text.
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UTCDateTime}


def table(model: type[Base]) -> Table:
    """A model's Table, for the Core statements of the hot paths."""
    return cast(Table, model.__table__)


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChannelIdentity(Base):
    """One customer account on one channel; a ghost user stands for it in Matrix."""

    __tablename__ = "channel_identities"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        # A customer's conversations (hub.db.context, hub.db.gdpr): migration 0013.
        Index("ix_channel_identities_customer_id", "customer_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    # Opaque on purpose: a Matrix ID can never be erased from room history.
    ghost_localpart: Mapped[str] = mapped_column(String(255), unique=True)
    ghost_profile_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    """A portal: one Matrix room per channel identity."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_status_assignee", "status", "assignee"),
        Index("ix_conversations_created_at", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    identity_id: Mapped[int] = mapped_column(
        ForeignKey("channel_identities.id", ondelete="CASCADE"), unique=True
    )
    room_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    room_name: Mapped[str | None] = mapped_column(String(255))
    last_inbound_at: Mapped[datetime | None] = mapped_column()
    last_adviser_reply_at: Mapped[datetime | None] = mapped_column()
    # Small per-conversation facts: {"blocked": true}, {"voice_reply_at": iso}...
    meta: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Who has it (an adviser's MXID; None: in the lobby) and since when; open or closed.
    assignee: Mapped[str | None] = mapped_column(String(255))
    assigned_at: Mapped[datetime | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    closed_at: Mapped[datetime | None] = mapped_column()


class Message(Base):
    """Message link: a message of a conversation, its remote id and its Matrix event id."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "remote_id"),
        Index("ix_messages_conversation", "conversation_id", "id"),
        # The KPIs' range scans (hub/db/kpi.py): covering, no table reads.
        Index(
            "ix_messages_kpi",
            "created_at",
            "direction",
            "conversation_id",
            "channel",
            "sender_mxid",
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(3))  # "in" customer→shop, "out" shop→customer
    kind: Mapped[str] = mapped_column(String(16))  # text | image | file | notice
    text: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    media: Mapped[dict[str, Any] | None] = mapped_column()
    # Structured content by kind (location, order items, template, buttons...).
    data: Mapped[dict[str, Any] | None] = mapped_column()
    remote_id: Mapped[str | None] = mapped_column(String(255))
    matrix_event_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    reply_to_message_id: Mapped[int | None] = mapped_column(BigId)
    sender_mxid: Mapped[str | None] = mapped_column(String(255))
    sender_name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxItem(Base):
    """A durable job: an effect that must happen exactly once, written in the same transaction
    as the state change causing it. Matrix events pushed by the homeserver are queued here
    too (kind "matrix.event"), so one worker gives both directions retry and ordering."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_order", "ordering_key", "status", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    # Items of one ordering key (a conversation) are delivered strictly in id order.
    ordering_key: Mapped[str] = mapped_column(String(300))
    # "<kind>/<key>": the key of one kind never collides with another's (hub.db.jobs).
    idempotency_key: Mapped[str] = mapped_column(String(400), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|done|dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    leased_until: Mapped[datetime | None] = mapped_column()
    leased_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column()


class InboxTransaction(Base):
    """Appservice transactions already accepted from the homeserver (dedupe by txnId)."""

    __tablename__ = "inbox_transactions"
    txn_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebchatVisitor(Base):
    """A widget visitor; the browser keeps the token, we keep only its hash."""

    __tablename__ = "webchat_visitors"
    visitor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class MediaFile(Base):
    """A file kept by the hub (widget uploads, adviser media fetched for a channel)."""

    __tablename__ = "media_files"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # unguessable
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    mimetype: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    mxc_uri: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Product(Base):
    """The catalogue, as imported (`hub catalog import` or commerce.catalogue_file)."""

    __tablename__ = "products"
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    vat_rate: Mapped[str] = mapped_column(String(16))  # a Decimal percentage, as text
    variant_id: Mapped[str | None] = mapped_column(String(64))
    image_url: Mapped[str | None] = mapped_column(Text)
    product_url: Mapped[str | None] = mapped_column(Text)
    in_stock: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CartRow(Base):
    """The cart of a conversation (hub.commerce.cart.Cart as JSON)."""

    __tablename__ = "carts"
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_created_at", "created_at"),
        Index("ix_orders_paid_at", "paid_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    # Who sent the checkout link: the KPIs attribute the sale to them.
    adviser_mxid: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    provider: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    provider_ref: Mapped[str | None] = mapped_column(String(255), index=True)
    provider_order_id: Mapped[str | None] = mapped_column(String(255))
    cart: Mapped[dict[str, Any]] = mapped_column()
    total_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    checkout_url: Mapped[str | None] = mapped_column(Text)
    short_code: Mapped[str | None] = mapped_column(String(32))
    details: Mapped[dict[str, Any] | None] = mapped_column()  # name, address, method...
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PaymentEventRow(Base):
    """Provider events already processed: a redelivered webhook is recognised here."""

    __tablename__ = "payment_events"
    __table_args__ = (UniqueConstraint("provider", "provider_event_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_event_id: Mapped[str] = mapped_column(String(255))
    order_id: Mapped[int | None] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class ShortLink(Base):
    """Every link sent to a customer goes through one of these: it counts the clicks."""

    __tablename__ = "short_links"
    __table_args__ = (Index("ix_short_links_created_at", "created_at"),)
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    order_id: Mapped[int | None] = mapped_column(BigId)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    first_click_at: Mapped[datetime | None] = mapped_column()
    last_click_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Timer(Base):
    """Something due at a wall-clock moment: a scheduled message, the "we're back" round at
    an opening, a missed-conversation check. The row is the record; hub.scheduler.runner
    arms an alarm for it (APScheduler) and fires it once (pending → fired, conditionally)."""

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_due", "status", "due_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # scheduled | back | opening | missed
    # One timer per key: the same opening or check is never armed twice.
    key: Mapped[str] = mapped_column(String(255), unique=True)
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    due_at: Mapped[datetime] = mapped_column()
    # pending | fired | cancelled | dropped (too late) | failed (set aside)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    payload: Mapped[dict[str, Any] | None] = mapped_column()
    created_by: Mapped[str | None] = mapped_column(String(255))  # the adviser, if any
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column()


class MissedConversation(Base):
    """A customer's message no adviser answered in time during opening hours (the KPIs
    count these)."""

    __tablename__ = "missed_conversations"
    __table_args__ = (Index("ix_missed_conversations_since", "since"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[int | None] = mapped_column(BigId)  # the first unanswered message
    since: Mapped[datetime] = mapped_column()  # when it was written
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsentRequest(Base):
    """An adviser asked the customer for consent to reuse their photos (hub.consent). With
    its images and answer it is the proof: who asked, which text (version and words), the
    customer's answer with its message ids and time, and later a revocation."""

    __tablename__ = "consent_requests"
    __table_args__ = (Index("ix_consent_requests_requested_at", "requested_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)  # as the customer got it
    text_version: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(255))  # the adviser's MXID
    request_message_id: Mapped[int | None] = mapped_column(BigId)  # the bot's question
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    # pending | granted | refused | revoked (hub.consent.photo.State)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    answered_at: Mapped[datetime | None] = mapped_column()
    answer_message_id: Mapped[int | None] = mapped_column(BigId)
    answer_remote_id: Mapped[str | None] = mapped_column(String(255))  # the channel's id
    answer_late: Mapped[bool] = mapped_column(default=False)  # after expires_at
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_by: Mapped[str | None] = mapped_column(String(255))  # "customer" or an MXID
    revoke_message_id: Mapped[int | None] = mapped_column(BigId)


class ConsentImage(Base):
    """An image a consent request covers; one request per image (asked once)."""

    __tablename__ = "consent_images"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("consent_requests.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    sha256: Mapped[str] = mapped_column(String(64))
    # kept | deleting | deleted: deleted everywhere the hub put it (refused or revoked)
    status: Mapped[str] = mapped_column(String(16), default="kept")
    deleted_at: Mapped[datetime | None] = mapped_column()


class NewsletterOptin(Base):
    """A customer's newsletter double opt-in on one channel identity (hub.consent.newsletter):
    the request, both confirmations and an opt-out, each with its time and message ids."""

    __tablename__ = "newsletter_optins"
    __table_args__ = (Index("ix_newsletter_optins_requested_at", "requested_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    identity_id: Mapped[int] = mapped_column(
        ForeignKey("channel_identities.id", ondelete="CASCADE"), unique=True
    )
    # requested | confirmed_once | opted_in | opted_out | expired
    state: Mapped[str] = mapped_column(String(16))
    text_version: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str | None] = mapped_column(String(255))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    first_confirmed_at: Mapped[datetime | None] = mapped_column()
    first_confirm_remote_id: Mapped[str | None] = mapped_column(String(255))
    confirmed_at: Mapped[datetime | None] = mapped_column()
    confirm_remote_id: Mapped[str | None] = mapped_column(String(255))
    opted_out_at: Mapped[datetime | None] = mapped_column()
    opt_out_remote_id: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BroadcastRecipient(Base):
    """One customer of a `hub broadcast`: sent, or skipped and why."""

    __tablename__ = "broadcast_recipients"
    __table_args__ = (UniqueConstraint("broadcast", "identity_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    broadcast: Mapped[str] = mapped_column(String(64), index=True)  # the broadcast's id
    template: Mapped[str] = mapped_column(String(255))
    identity_id: Mapped[int] = mapped_column(
        ForeignKey("channel_identities.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[int | None] = mapped_column(BigId)
    status: Mapped[str] = mapped_column(String(16))  # queued | sent | failed | skipped
    reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Erasure(Base):
    """A customer erased (`hub gdpr erase`, retention): what was removed, never who."""

    __tablename__ = "erasures"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))  # request | retention
    counts: Mapped[dict[str, Any]] = mapped_column()
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)


class CryptoState(Base):
    """The bot device's end-to-end encryption state (hub.matrix.crypto): its Olm account,
    Olm sessions, Megolm room keys, other users' devices, encrypted rooms. One row per item,
    written through as the Olm machine changes it; a value is an Olm pickle (encrypted with
    `encryption.pickle_key`) or JSON, never logged."""

    __tablename__ = "crypto_state"
    namespace: Mapped[str] = mapped_column(String(32), primary_key=True)
    # e.g. a Megolm session: "<room id>|<sender key>|<session id>"
    key: Mapped[str] = mapped_column(String(600), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AdviserStatus(Base):
    """An adviser's availability for automatic assignment (`!available` / `!unavailable`)
    and when they were last given a conversation (round robin: the longest waiting first)."""

    __tablename__ = "adviser_status"
    mxid: Mapped[str] = mapped_column(String(255), primary_key=True)
    available: Mapped[bool] = mapped_column(default=True)
    last_assigned_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class HubState(Base):
    """A few facts of the hub itself that must outlive a restart: the lobby listing's event,
    the advisers' space. One JSON value per key."""

    __tablename__ = "hub_state"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Exchange(Base):
    """An exchange (hub.kpi.compute says what one is), written when its first customer
    message is stored and answered when the first adviser message after it is (hub.db.
    exchanges): the KPIs read these rows instead of looking for exchanges among all messages."""

    __tablename__ = "exchanges"
    __table_args__ = (
        Index("ix_exchanges_started_at", "started_at"),
        Index("ix_exchanges_conversation", "conversation_id", "first_reply_at"),
    )
    message_id: Mapped[int] = mapped_column(BigId, primary_key=True)  # the customer's message
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column()  # the message's created_at
    first_reply_at: Mapped[datetime | None] = mapped_column()  # the adviser message's created_at
    first_reply_by: Mapped[str | None] = mapped_column(String(255))


class InboundSpan(Base):
    """When a conversation's customer wrote within one half UTC day (`bucket`: epoch seconds
    // 43200): the first and the last customer message's created_at. A half day touches at
    most two local days of any zone, so these two instants give every local day with a
    customer message exactly, whatever the shop's zone (hub.db.kpi counts conversations per
    day from them: one row per conversation and half day instead of every message)."""

    __tablename__ = "inbound_spans"
    __table_args__ = (
        Index("ix_inbound_spans_conversation", "conversation_id"),
        {"sqlite_with_rowid": False},  # clustered by (bucket, conversation): range scans
    )
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(32))
    first_at: Mapped[datetime] = mapped_column()
    last_at: Mapped[datetime] = mapped_column()


class BusSpill(Base):
    """A message to the other hub processes too large for NOTIFY (hub.db.bus), kept a few
    minutes for them to read."""

    __tablename__ = "bus_spill"
    __table_args__ = (Index("ix_bus_spill_created_at", "created_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()


class DashboardSession(Base):
    """A login to the admin dashboard (hub.http.dashboard_auth), in the database so that
    every hub process on it knows it (hub.db.dashboard). `id` is the SHA-256 (hex) of the
    token in the admin's cookie: the token itself is never stored, so a copy of this table
    signs nobody in. `last_seen_at` is written at most once a minute (see hub.db.dashboard)."""

    __tablename__ = "dashboard_sessions"
    __table_args__ = (
        Index("ix_dashboard_sessions_last_seen_at", "last_seen_at"),
        Index("ix_dashboard_sessions_username", "username", "last_seen_at"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    csrf: Mapped[str] = mapped_column(String(64))  # the forms' token (sent in every page)
    created_at: Mapped[datetime] = mapped_column()
    last_seen_at: Mapped[datetime] = mapped_column()
