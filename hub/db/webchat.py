"""The web chat's own rows: visitors (the widget keeps a token, we keep its hash) and what a
visitor may see of their conversation. Units of work (see hub.db.database)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select
from sqlalchemy.sql import Executable

from hub.db import conversations
from hub.db.models import ChannelIdentity, Conversation, Message, WebchatVisitor, table, utcnow
from hub.db.statements import run, statement

if TYPE_CHECKING:
    from hub.db.database import Tx

KIND = "webchat"
WV = table(WebchatVisitor)
M = table(Message)
CI = table(ChannelIdentity)
CV = table(Conversation)
# What a visitor sees of the shop's messages: those sent to them (see `history`).
VISIBLE = ("sent", "delivered", "read")
# How many of the shop's latest messages a tapped button is looked for in.
BUTTON_SCAN = 200


@dataclass(frozen=True)
class ButtonRef:
    """A reply button the visitor was shown: the message it came with and its title."""

    message_id: int
    remote_id: str | None
    title: str


def buttons_of(data: dict[str, Any] | None) -> list[dict[str, str]]:
    """The reply buttons of an outbound message's `data` as the widget gets them, stored as
    `{"buttons": [{"id", "title", ...}]}` (hub.db.answers.bot_message)."""
    rows = data.get("buttons") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return []
    return [
        {"id": b["id"], "title": b["title"]}
        for b in rows
        if isinstance(b, dict) and isinstance(b.get("id"), str) and isinstance(b.get("title"), str)
    ]


@statement
def _visitor_by_token_hash(dialect: str) -> Executable:
    return select(WV.c.visitor_id, WV.c.name).where(WV.c.token_hash == bindparam("th"))


def visitor_by_token_hash(tx: Tx, token_hash: str) -> tuple[str, str | None] | None:
    """(visitor_id, name) of the visitor holding a token."""
    row = run(tx, _visitor_by_token_hash, {"th": token_hash}).first()
    return None if row is None else (row[0], row[1])


@dataclass(frozen=True)
class VisitorRow:
    """A visitor as a request of theirs needs to know them."""

    visitor_id: str
    name: str | None
    # Their conversation exists (their next message is not the first of a new one).
    has_conversation: bool


@statement
def _visitor_by_token(dialect: str) -> Executable:
    return (
        select(WV.c.visitor_id, WV.c.name, CV.c.id)
        .select_from(WV)
        .outerjoin(CI, (CI.c.channel == KIND) & (CI.c.external_id == WV.c.visitor_id))
        .outerjoin(CV, CV.c.identity_id == CI.c.id)
        .where(WV.c.token_hash == bindparam("th"))
    )


def visitor_by_token(tx: Tx, token_hash: str) -> VisitorRow | None:
    """The visitor holding a token, and whether their conversation exists: one read for
    the widget API's authentication and its cap on new conversations."""
    row = run(tx, _visitor_by_token, {"th": token_hash}).first()
    return None if row is None else VisitorRow(row[0], row[1], row[2] is not None)


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
            (Message.direction == "in") | (Message.status.in_(VISIBLE)),
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


@statement
def _shown_with_data(dialect: str) -> Executable:
    return (
        select(M.c.id, M.c.remote_id, M.c.data)
        .where(
            M.c.conversation_id == bindparam("cid"),
            M.c.direction == "out",
            M.c.status.in_(VISIBLE),
        )
        .order_by(M.c.id.desc())
        .limit(BUTTON_SCAN)
    )


def button_of(tx: Tx, visitor_id: str, button_id: str) -> ButtonRef | None:
    """The reply button `button_id` of the newest message the shop sent to this visitor
    that carries it; None when no message of theirs has it (a forged or stale id)."""
    conversation = conversations.conversation_of(tx, KIND, visitor_id)
    if conversation is None:
        return None
    for message_id, remote_id, data in run(tx, _shown_with_data, {"cid": conversation.id}).all():
        for button in buttons_of(data):
            if button["id"] == button_id:
                return ButtonRef(message_id, remote_id, button["title"])
    return None
