"""A message with what sending it anywhere needs: its conversation, its customer's channel
identity and the message it replies to. Read by one prepared statement (plus one for the reply
target), by the handler of a job or, for a job handed over or chained, in the transaction
that queued or leased it (`preload_message`), which spares the handler a read transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

from hub.db.models import ChannelIdentity, Conversation, Message, table, utcnow
from hub.db.statements import model, run, split, statement
from hub.db.upsert import dialect_insert

if TYPE_CHECKING:
    from hub.db.database import Tx

CI = table(ChannelIdentity)
CV = table(Conversation)
M = table(Message)


@dataclass
class MessageContext:
    """A message with its conversation, identity and reply target (detached objects)."""

    message: Message
    conversation: Conversation
    identity: ChannelIdentity
    target: Message | None


@statement
def _context(dialect: str) -> Executable:
    return (
        select(M, CV, CI)
        .join(CV, CV.c.id == M.c.conversation_id)
        .join(CI, CI.c.id == CV.c.identity_id)
        .where(M.c.id == bindparam("mid"))
    )


@statement
def _message_by_id(dialect: str) -> Executable:
    return select(M).where(M.c.id == bindparam("mid"))


def message_by_id(tx: Tx | Connection, message_id: int) -> Message | None:
    row = run(tx, _message_by_id, {"mid": message_id}).first()
    return model(Message, split(row, M)[0]) if row is not None else None


def message_context(tx: Tx | Connection, message_id: int) -> MessageContext | None:
    row = run(tx, _context, {"mid": message_id}).first()
    if row is None:
        return None
    m, cv, ci = split(row, M, CV, CI)
    message = model(Message, m)
    target = None
    if message.reply_to_message_id:
        target = message_by_id(tx, message.reply_to_message_id)
    return MessageContext(message, model(Conversation, cv), model(ChannelIdentity, ci), target)


def preload_message(conn: Connection, payload: dict[str, Any]) -> MessageContext | None:
    """A job's message context, read in the transaction that leases the job."""
    return message_context(conn, payload["message_id"])


def context_of(job_context: Any, message_id: int) -> MessageContext | None:
    """The context a job came with, if it is this message's."""
    if isinstance(job_context, MessageContext) and job_context.message.id == message_id:
        return job_context
    return None


@statement(insert=True)
def _insert_message_dedupe(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    return (
        insert(M).on_conflict_do_nothing(index_elements=["channel", "remote_id"]).returning(M.c.id)
    )


@statement(insert=True)
def _insert_message_by_event(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    return insert(M).on_conflict_do_nothing(index_elements=["matrix_event_id"]).returning(M.c.id)


@statement(insert=True)
def _insert_message(dialect: str) -> Executable:
    return M.insert().returning(M.c.id)


def insert_message(tx: Tx, values: dict[str, Any]) -> Message | None:
    """Insert a message; None when its (channel, remote_id) or its Matrix event is known
    already. Returns a detached Message with every column set."""
    full: dict[str, Any] = {c.name: None for c in M.columns if c.name != "id"}
    full |= {"created_at": utcnow(), "status": "pending", **values}
    if full.get("remote_id"):
        stmt = _insert_message_dedupe
    elif full.get("matrix_event_id"):
        stmt = _insert_message_by_event
    else:  # the bot's own messages: their job's idempotency key guards them
        stmt = _insert_message
    new_id = run(tx, stmt, full).scalar()
    if new_id is None:
        return None
    full["id"] = new_id
    return model(Message, full)
