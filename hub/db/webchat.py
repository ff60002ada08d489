"""The web chat's own rows: visitors (the widget keeps a token, we keep its hash) and what a
visitor may see of their conversation. Units of work (see hub.db.database)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select
from sqlalchemy.sql import Executable

from hub.db import conversations
from hub.db.models import Message, WebchatVisitor, table, utcnow
from hub.db.statements import run, statement

if TYPE_CHECKING:
    from hub.db.database import Tx

KIND = "webchat"
WV = table(WebchatVisitor)


@statement
def _visitor_by_token_hash(dialect: str) -> Executable:
    return select(WV.c.visitor_id, WV.c.name).where(WV.c.token_hash == bindparam("th"))


def visitor_by_token_hash(tx: Tx, token_hash: str) -> tuple[str, str | None] | None:
    """(visitor_id, name) of the visitor holding a token."""
    row = run(tx, _visitor_by_token_hash, {"th": token_hash}).first()
    return None if row is None else (row[0], row[1])


def open_session(
    tx: Tx, known_token_hash: str | None, new_token_hash: str, name: str | None
) -> tuple[WebchatVisitor, bool]:
    """The visitor of a known token (seen now, renamed if a name is given), or a new visitor
    holding `new_token_hash`; True if new."""
    visitor = None
    if known_token_hash is not None:
        visitor = tx.orm.scalar(
            select(WebchatVisitor).where(WebchatVisitor.token_hash == known_token_hash)
        )
    created = visitor is None
    if visitor is None:
        visitor = WebchatVisitor(
            visitor_id=secrets.token_hex(8),
            token_hash=new_token_hash,
            name=name,
            created_at=utcnow(),
            last_seen_at=utcnow(),
        )
        tx.orm.add(visitor)
    else:
        visitor.last_seen_at = utcnow()
        if name:
            visitor.name = name
    if name:
        identity = conversations.identity_by_external_id(tx, KIND, visitor.visitor_id)
        if identity is not None:
            identity.display_name = name
    return visitor, created


def history(tx: Tx, visitor_id: str, after_id: int, limit: int = 200) -> list[Message]:
    """Messages a visitor may see: their own and the shop's that were sent to them."""
    conversation = conversations.conversation_of(tx, KIND, visitor_id)
    if conversation is None:
        return []
    rows = tx.orm.scalars(
        select(Message)
        .where(
            Message.conversation_id == conversation.id,
            Message.id > after_id,
            (Message.direction == "in") | (Message.status.in_(("sent", "delivered", "read"))),
        )
        .order_by(Message.id)
        .limit(limit)
    )
    return list(rows)


def shown_to_visitor(tx: Tx, message_id: int, sender_name: str | None) -> Message:
    """An adviser's message is sent: the visitor may see it (status "sent")."""
    message = tx.orm.get(Message, message_id)
    assert message is not None
    message.status = "sent"
    message.sender_name = sender_name
    message.remote_id = f"out:{message_id}"
    return message
