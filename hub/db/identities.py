"""Customers as the channels know them: a channel identity (with its customer) and its
conversation, found or created in one go on the hot path. A unit-of-work helper (see
hub.db.database); prepared statements, because every inbound message needs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.sql import Executable

from hub.db.models import ChannelIdentity, Conversation, Customer, table, utcnow
from hub.db.statements import model, run, split, statement
from hub.db.upsert import dialect_insert

if TYPE_CHECKING:
    from hub.db.database import Tx

CU = table(Customer)
CI = table(ChannelIdentity)
CV = table(Conversation)


@statement
def _identity_conversation(dialect: str) -> Executable:
    # Whole rows: a message's delivery job can be handed to the worker with them.
    return (
        select(CI, CV)
        .outerjoin(CV, CV.c.identity_id == CI.c.id)
        .where(CI.c.channel == bindparam("channel"), CI.c.external_id == bindparam("ext"))
    )


@statement
def _lock_conversation(dialect: str) -> Executable:
    return select(CV).where(CV.c.id == bindparam("cid")).with_for_update()


@statement(insert=True)
def _insert_customer(dialect: str) -> Executable:
    return CU.insert().returning(CU.c.id)


@statement(insert=True)
def _insert_identity(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    return (
        insert(CI)
        .on_conflict_do_nothing(index_elements=["channel", "external_id"])
        .returning(CI.c.id)
    )


@statement
def _delete_customer(dialect: str) -> Executable:
    return CU.delete().where(CU.c.id == bindparam("cid"))


@statement
def _identity_id(dialect: str) -> Executable:
    return select(CI.c.id, CI.c.display_name).where(
        CI.c.channel == bindparam("channel"), CI.c.external_id == bindparam("ext")
    )


@statement
def _set_identity_name(dialect: str) -> Executable:
    return update(CI).where(CI.c.id == bindparam("iid")).values(display_name=bindparam("n"))


@statement(insert=True)
def _insert_conversation(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    return insert(CV).on_conflict_do_nothing(index_elements=["identity_id"])


@statement
def _conversation_by_identity(dialect: str) -> Executable:
    return select(CV.c.id, CV.c.last_inbound_at).where(CV.c.identity_id == bindparam("iid"))


@dataclass
class IdentityConversation:
    identity_id: int
    display_name: str | None
    conversation_id: int
    last_inbound_at: datetime | None
    # Both rows as they are after this transaction, when they existed before it (detached).
    rows: tuple[ChannelIdentity, Conversation] | None = None


def identity_conversation(
    tx: Tx,
    channel: str,
    external_id: str,
    display_name: str | None,
    ghost_localpart: Callable[[], str],
) -> IdentityConversation:
    """Get or create a channel identity (with its customer) and its conversation; a given
    display name replaces a different known one (None never erases). Safe against another
    process creating them at the same time (INSERT ... ON CONFLICT DO NOTHING)."""
    row = run(tx, _identity_conversation, {"channel": channel, "ext": external_id}).first()
    ci: dict[str, Any] | None = None
    cv: dict[str, Any] | None = None
    if row is None:
        identity_id, known_name = _create_identity(
            tx, channel, external_id, display_name, ghost_localpart()
        )
        conversation_id, last = None, None
    else:
        ci, cv = split(row, CI, CV)
        identity_id, known_name = ci["id"], ci["display_name"]
        if cv["id"] is not None and tx.conn.dialect.name != "sqlite":
            # Several processes may store messages of one conversation at once (a provider
            # delivers two webhooks in parallel to two hub processes). Holding the
            # conversation's row until commit makes their jobs' ids follow their commit
            # order, so the queue's "oldest pending job of the key first" is the order the
            # messages were stored in. SQLite has one writer at a time already. The row is
            # read again under the lock: another process may just have changed it.
            cv = split(run(tx, _lock_conversation, {"cid": cv["id"]}).one(), CV)[0]
        conversation_id, last = cv["id"], cv["last_inbound_at"]
    if display_name and known_name != display_name:
        run(tx, _set_identity_name, {"iid": identity_id, "n": display_name})
        known_name = display_name
        if ci is not None:
            ci["display_name"] = display_name
    if conversation_id is None:
        run(tx, _insert_conversation, {"identity_id": identity_id, "created_at": utcnow()})
        conversation_id, last = run(tx, _conversation_by_identity, {"iid": identity_id}).one()
        return IdentityConversation(identity_id, known_name, conversation_id, last)
    assert ci is not None and cv is not None
    rows = (model(ChannelIdentity, ci), model(Conversation, cv))
    return IdentityConversation(identity_id, known_name, conversation_id, last, rows)


def _create_identity(
    tx: Tx, channel: str, external_id: str, name: str | None, ghost_localpart: str
) -> tuple[int, str | None]:
    """(id, display name) of the new identity, or of the one another process created first."""
    now = utcnow()
    customer_id = run(tx, _insert_customer, {"display_name": name, "created_at": now}).scalar()
    inserted = run(
        tx,
        _insert_identity,
        {
            "customer_id": customer_id,
            "channel": channel,
            "external_id": external_id,
            "display_name": name,
            "ghost_localpart": ghost_localpart,
            "created_at": now,
        },
    ).scalar()
    if inserted is not None:
        return int(inserted), name
    # Another process created it first.
    run(tx, _delete_customer, {"cid": customer_id})
    found, known = run(tx, _identity_id, {"channel": channel, "ext": external_id}).one()
    return int(found), known
