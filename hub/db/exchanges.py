"""The KPIs' bookkeeping, written with each message in the unit of work that stores it, so a
report reads one row per exchange and per conversation and half day instead of walking every
message with window functions (hub.db.kpi; what an exchange is: hub.kpi.compute).

- A customer message (hub.db.inbound) starts an exchange when no customer or adviser message
  of its conversation came before it (by id) or the last one is more than
  EXCHANGE_GAP_SECONDS older (whole epoch seconds, as the SQL of migration 0010 compares):
  one indexed look back. It also widens its conversation's `inbound_spans` row.
- An adviser message (hub.db.outbound; one with a sender_mxid: bot messages do not answer)
  answers every unanswered exchange of its conversation that started before it.

Migration 0010 writes the same rows for the messages stored before it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

from hub.db.models import Exchange, InboundSpan, Message, table
from hub.db.statements import run, statement
from hub.db.upsert import dialect_insert

if TYPE_CHECKING:
    from hub.db.database import Tx

EXCHANGE_GAP_SECONDS = 24 * 3600  # hub.kpi.compute's, repeated: hub.db must not import hub.kpi
SPAN_SECONDS = 43200  # inbound_spans' buckets: half UTC days
EX = table(Exchange)
SP = table(InboundSpan)
M = table(Message)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch(moment: datetime) -> int:
    """Whole epoch seconds, floored like SQLite's unixepoch() and the migration's SQL."""
    return (moment - _EPOCH) // timedelta(seconds=1)


@statement
def _previous(dialect: str) -> Executable:
    # ix_messages_conversation (conversation_id, id) backwards; bot messages are skipped.
    return (
        select(M.c.created_at)
        .where(
            M.c.conversation_id == bindparam("cid"),
            M.c.id < bindparam("mid"),
            or_(M.c.direction == "in", M.c.sender_mxid.is_not(None)),
        )
        .order_by(M.c.id.desc())
        .limit(1)
    )


@statement(insert=True)
def _start(dialect: str) -> Executable:
    return EX.insert()


@statement
def _widen(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    stmt = insert(SP).values(
        bucket=bindparam("bucket"),
        conversation_id=bindparam("cid"),
        channel=bindparam("channel"),
        first_at=bindparam("at"),
        last_at=bindparam("at"),
    )
    new = stmt.excluded
    # Ids follow time on one writer; several PostgreSQL processes may store out of order.
    return stmt.on_conflict_do_update(
        index_elements=["bucket", "conversation_id"],
        set_={
            "first_at": case((new.first_at < SP.c.first_at, new.first_at), else_=SP.c.first_at),
            "last_at": case((new.last_at > SP.c.last_at, new.last_at), else_=SP.c.last_at),
        },
        where=or_(new.first_at < SP.c.first_at, new.last_at > SP.c.last_at),
    )


@statement
def _answer(dialect: str) -> Executable:
    return (
        update(EX)
        .where(
            EX.c.conversation_id == bindparam("cid"),
            EX.c.first_reply_at.is_(None),
            EX.c.message_id < bindparam("mid"),
        )
        .values(first_reply_at=bindparam("at"), first_reply_by=bindparam("by"))
    )


def customer_message(tx: Tx | Connection, message: Message) -> None:
    """A customer's message was stored (a text, a file, a reaction, an edit: all count)."""
    at = message.created_at
    t = epoch(at)
    previous = run(tx, _previous, {"cid": message.conversation_id, "mid": message.id}).scalar()
    if previous is None or epoch(_aware(previous)) < t - EXCHANGE_GAP_SECONDS:
        values: dict[str, Any] = {
            "message_id": message.id,
            "conversation_id": message.conversation_id,
            "channel": message.channel,
            "started_at": at,
            "first_reply_at": None,
            "first_reply_by": None,
        }
        run(tx, _start, values)
    params = {
        "bucket": t // SPAN_SECONDS,
        "cid": message.conversation_id,
        "channel": message.channel,
        "at": at,
    }
    run(tx, _widen, params)


def adviser_message(tx: Tx | Connection, message: Message) -> None:
    """A message for the customer was stored: an adviser's answers the open exchanges."""
    if message.sender_mxid is None or message.direction != "out":
        return
    params = {
        "cid": message.conversation_id,
        "mid": message.id,
        "at": message.created_at,
        "by": message.sender_mxid,
    }
    run(tx, _answer, params)


def _aware(moment: datetime) -> datetime:
    # A raw prepared statement on SQLite may hand back the naive UTC value.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
