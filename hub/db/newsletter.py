"""The newsletter's double opt-in and broadcasts as units of work (see hub.db.database).

- One `newsletter_optins` row per channel identity: read locked (FOR UPDATE on PostgreSQL;
  SQLite's writers take turns), created once (INSERT ... ON CONFLICT DO NOTHING), changed with
  the columns hub.consent.newsletter.changes computes.
- A broadcast records every customer once (unique broadcast + identity): queued with a
  template message and its channel.send job, or skipped with the reason. The jobs share the
  broadcast's ordering key, so they go out one after another, spaced by their delays, and
  never hold up a conversation's own messages. Their progress is read from the messages'
  status, which the hub's worker sets when it sends (hub.db.outbound).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, func, select, update

from hub.consent.newsletter import Skip, State, skip_reason
from hub.db.jobs import enqueue
from hub.db.messages import insert_message
from hub.db.models import (
    BroadcastRecipient,
    ChannelIdentity,
    Conversation,
    Message,
    NewsletterOptin,
    OutboxItem,
    utcnow,
)
from hub.db.upsert import insert_ignore
from hub.jobs.kinds import CHANNEL_SEND

if TYPE_CHECKING:
    from hub.db.database import Tx

QUEUED, SENT, FAILED, SKIPPED = "queued", "sent", "failed", "skipped"
CANCELLED = "cancelled"  # a message's status: never to be sent (the customer opted out)
_SENT_STATUSES = ("sent", "delivered", "read")


# -- the opt-in ---------------------------------------------------------------------------


def identity_of(tx: Tx, conversation_id: int) -> ChannelIdentity:
    """The channel identity of a conversation."""
    row = tx.orm.execute(
        select(ChannelIdentity)
        .join(Conversation, Conversation.identity_id == ChannelIdentity.id)
        .where(Conversation.id == conversation_id)
    ).scalar_one()
    return row


def optin(tx: Tx, identity_id: int, *, lock: bool = True) -> NewsletterOptin | None:
    """The identity's opt-in row; locked against another process's change when `lock`."""
    query = select(NewsletterOptin).where(NewsletterOptin.identity_id == identity_id)
    if lock:
        query = query.with_for_update()
    return tx.orm.scalar(query)


def ensure_optin(tx: Tx, identity_id: int, version: str) -> NewsletterOptin:
    """The identity's row, created (state "none" until the caller records its first step in
    the same transaction) when it has none."""
    now = utcnow()
    values = {
        "identity_id": identity_id,
        "state": State.NONE.value,
        "text_version": version,
        "requested_at": now,
        "updated_at": now,
    }
    insert_ignore(tx, NewsletterOptin, values, ["identity_id"])
    row = optin(tx, identity_id)
    assert row is not None
    return row


def change(tx: Tx, row: NewsletterOptin, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(row, name, value)
    tx.orm.flush()


# -- broadcasts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """What a broadcast sends: an approved WhatsApp template, filled in."""

    name: str
    language: str
    params: tuple[str, ...]
    preview: str  # what advisers see in the message history
    sender_name: str | None


@dataclass(frozen=True)
class Candidate:
    identity_id: int
    conversation_id: int
    channel: str
    state: State
    recipient_id: int | None  # recorded by an earlier run of this broadcast
    recorded: str | None  # its status


@dataclass
class Batch:
    """What one batch did (or, in a dry run, would do)."""

    last_identity_id: int | None = None  # None: no customers left
    queued: int = 0
    skipped: Counter[Skip] = field(default_factory=Counter)
    earlier: int = 0  # queued, sent or failed by an earlier run: left alone


def _audience(tx: Tx, broadcast: str, after_id: int, limit: int) -> list[Candidate]:
    query = (
        select(
            ChannelIdentity.id,
            Conversation.id,
            ChannelIdentity.channel,
            NewsletterOptin.state,
            BroadcastRecipient.id,
            BroadcastRecipient.status,
        )
        .join(Conversation, Conversation.identity_id == ChannelIdentity.id)
        .outerjoin(NewsletterOptin, NewsletterOptin.identity_id == ChannelIdentity.id)
        .outerjoin(
            BroadcastRecipient,
            and_(
                BroadcastRecipient.identity_id == ChannelIdentity.id,
                BroadcastRecipient.broadcast == broadcast,
            ),
        )
        .where(ChannelIdentity.id > after_id)
        .order_by(ChannelIdentity.id)
        .limit(limit)
    )
    return [
        Candidate(int(iid), int(cid), channel, State(state or State.NONE), rid, status)
        for iid, cid, channel, state, rid, status in tx.orm.execute(query)
    ]


def plan_batch(tx: Tx, broadcast: str, after_id: int, limit: int) -> Batch:
    """A dry run's batch: what `queue_batch` would do, without writing."""
    batch = Batch()
    for c in _audience(tx, broadcast, after_id, limit):
        batch.last_identity_id = c.identity_id
        if c.recorded not in (None, SKIPPED):
            batch.earlier += 1
            continue
        reason = skip_reason(c.state, c.channel)
        if reason is None:
            batch.queued += 1
        else:
            batch.skipped[reason] += 1
    return batch


def queue_batch(
    tx: Tx,
    broadcast: str,
    template: Template,
    after_id: int,
    limit: int,
    first_due: datetime,
    interval: float,
) -> Batch:
    """Record up to `limit` customers (identity id above `after_id`) for the broadcast: a
    template message and its channel.send job for each customer it may reach (the first
    due at `first_due`, each next `interval` seconds later: the caller's rate), the reason
    for everyone else. A customer recorded by an earlier run is left alone, except one
    skipped then: looked at again."""
    batch = Batch()
    wait = (first_due - utcnow()).total_seconds()
    for c in _audience(tx, broadcast, after_id, limit):
        batch.last_identity_id = c.identity_id
        if c.recorded not in (None, SKIPPED):
            batch.earlier += 1
            continue
        reason = skip_reason(c.state, c.channel)
        status = QUEUED if reason is None else SKIPPED
        claimed = _record(tx, broadcast, template.name, c, status, reason)
        if not claimed:  # another run of the same broadcast recorded it just now
            batch.earlier += 1
            continue
        if reason is not None:
            batch.skipped[reason] += 1
            continue
        delay = max(0.0, wait + batch.queued * interval)
        message_id = _queue_template(tx, broadcast, template, c, delay)
        tx.orm.execute(
            update(BroadcastRecipient)
            .where(BroadcastRecipient.broadcast == broadcast)
            .where(BroadcastRecipient.identity_id == c.identity_id)
            .values(message_id=message_id)
        )
        batch.queued += 1
    return batch


def _record(
    tx: Tx, broadcast: str, template: str, c: Candidate, status: str, reason: Skip | None
) -> bool:
    """Claim the customer's row of this broadcast: a new one, or one skipped before (a
    conditional UPDATE: of two runs only one claims it)."""
    values = {"status": status, "reason": reason.value if reason else None}
    if c.recipient_id is None:
        row = {
            "broadcast": broadcast,
            "template": template,
            "identity_id": c.identity_id,
            "message_id": None,
            "created_at": utcnow(),
            **values,
        }
        return insert_ignore(tx, BroadcastRecipient, row, ["broadcast", "identity_id"])
    done = tx.orm.execute(
        update(BroadcastRecipient)
        .where(BroadcastRecipient.id == c.recipient_id, BroadcastRecipient.status == SKIPPED)
        .values(**values)
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def broadcast_key(broadcast: str) -> str:
    """The ordering key of a broadcast's jobs: one after another, apart from conversations."""
    return f"broadcast:{broadcast}"


def _queue_template(tx: Tx, broadcast: str, t: Template, c: Candidate, delay: float) -> int:
    message = insert_message(
        tx,
        {
            "conversation_id": c.conversation_id,
            "channel": c.channel,
            "direction": "out",
            "kind": "template",
            "text": t.preview,
            "data": {"name": t.name, "language": t.language, "params": list(t.params)},
            "sender_name": t.sender_name,
            "status": "pending",
        },
    )
    assert message is not None  # no remote id yet: nothing to collide with
    enqueue(
        tx,
        CHANNEL_SEND,
        broadcast_key(broadcast),
        {"message_id": message.id},
        f"broadcast:{broadcast}:{c.identity_id}",
        delay=delay,
    )
    return message.id


@dataclass(frozen=True)
class Progress:
    """Where a broadcast stands, over all its runs."""

    queued: int = 0
    sent: int = 0
    failed: int = 0
    skipped: tuple[tuple[Skip, int], ...] = ()

    @property
    def to_send(self) -> int:
        return self.queued + self.sent + self.failed

    @property
    def done(self) -> int:
        return self.sent + self.failed

    def skipped_for(self, reason: Skip) -> int:
        return dict(self.skipped).get(reason, 0)


def _message_sent() -> Any:
    return exists().where(
        Message.id == BroadcastRecipient.message_id, Message.status.in_(_SENT_STATUSES)
    )


def _message_failed() -> Any:
    # Failed (the worker gave up: hub.db.outbound.send_failed), or gone (erased).
    failed = exists().where(Message.id == BroadcastRecipient.message_id, Message.status == FAILED)
    gone = ~exists().where(Message.id == BroadcastRecipient.message_id)
    return failed | (BroadcastRecipient.message_id.is_not(None) & gone)


def progress(tx: Tx, broadcast: str, *, sync: bool = False) -> Progress:
    """The broadcast's counts, queued rows whose message was sent or failed counted as
    such; with `sync` those rows are updated too (a write)."""
    of_broadcast = BroadcastRecipient.broadcast == broadcast
    if sync:
        queued = and_(of_broadcast, BroadcastRecipient.status == QUEUED)
        tx.orm.execute(
            update(BroadcastRecipient).where(queued, _message_sent()).values(status=SENT)
        )
        tx.orm.execute(
            update(BroadcastRecipient).where(queued, _message_failed()).values(status=FAILED)
        )
    status = BroadcastRecipient.status
    effective = (
        select(
            status,
            BroadcastRecipient.reason,
            _message_sent().label("is_sent"),
            _message_failed().label("is_failed"),
        )
        .where(of_broadcast)
        .subquery()
    )
    c = effective.c
    groups = (c.status, c.reason, c.is_sent, c.is_failed)
    rows = tx.orm.execute(select(*groups, func.count()).group_by(*groups)).all()
    counts: Counter[str] = Counter()
    skipped: Counter[Skip] = Counter()
    for row_status, reason, sent, failed, n in rows:
        if row_status == QUEUED and sent:
            row_status = SENT
        elif row_status == QUEUED and failed:
            row_status = FAILED
        if row_status == SKIPPED:
            skipped[Skip(reason)] += n
        else:
            counts[row_status] += n
    return Progress(
        queued=counts[QUEUED],
        sent=counts[SENT],
        failed=counts[FAILED],
        skipped=tuple(sorted(skipped.items())),
    )


def recipients(tx: Tx, broadcast: str) -> list[BroadcastRecipient]:
    """Every customer recorded for a broadcast, in identity order."""
    query = select(BroadcastRecipient).where(BroadcastRecipient.broadcast == broadcast)
    return list(tx.orm.scalars(query.order_by(BroadcastRecipient.identity_id)))


def oldest_due(tx: Tx, broadcast: str) -> datetime | None:
    """When the broadcast's oldest unsent job came due (None: none left)."""
    query = select(func.min(OutboxItem.next_attempt_at)).where(
        OutboxItem.ordering_key == broadcast_key(broadcast), OutboxItem.status == "pending"
    )
    return tx.orm.scalar(query)


def cancel_queued(tx: Tx, identity_id: int) -> int:
    """A customer who opted out gets nothing a broadcast queued before: its messages not yet
    sent are cancelled (the send job finds them so and sends nothing) and the customer is
    recorded as skipped. How many."""
    queued = tx.orm.scalars(
        select(BroadcastRecipient).where(
            BroadcastRecipient.identity_id == identity_id,
            BroadcastRecipient.status == QUEUED,
        )
    ).all()
    cancelled = 0
    for recipient in queued:
        message = tx.orm.get(Message, recipient.message_id) if recipient.message_id else None
        if message is not None and message.status != "pending":
            continue  # on its way or sent already: the progress counts it as such
        if message is not None:
            message.status = CANCELLED
        recipient.status, recipient.reason = SKIPPED, Skip.OPTED_OUT.value
        cancelled += 1
    tx.orm.flush()
    return cancelled
