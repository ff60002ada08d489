"""Events the bot posts into a portal room (notices, reactions, state), queued as
matrix.send jobs in the caller's unit of work: they reach the room once it commits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.db.jobs import conversation_key, enqueue, room_out_key
from hub.jobs.kinds import MATRIX_NOTICE, MATRIX_SEND

if TYPE_CHECKING:
    from hub.db.database import Tx


def room_event(
    tx: Tx,
    room_id: str,
    event_type: str,
    content: dict[str, Any],
    idempotency_key: str,
    as_user: str | None = None,
    state_key: str | None = None,
) -> None:
    """An event of the bot (or a ghost); a state event when `state_key` is given."""
    payload: dict[str, Any] = {
        "room_id": room_id,
        "event_type": event_type,
        "content": content,
        "as_user": as_user,
    }
    if state_key is not None:
        payload["state_key"] = state_key
    enqueue(tx, MATRIX_SEND, room_out_key(room_id), payload, idempotency_key)


def notice(
    tx: Tx,
    room_id: str,
    text: str,
    idempotency_key: str,
    html: str | None = None,
    reply_to: str | None = None,
) -> None:
    """An m.notice from the bot (advisers' clients show it as a bot message)."""
    content: dict[str, Any] = {"msgtype": "m.notice", "body": text}
    if html:
        content |= {"format": "org.matrix.custom.html", "formatted_body": html}
    if reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    room_event(tx, room_id, "m.room.message", content, idempotency_key)


def reaction(tx: Tx, room_id: str, event_id: str, key: str) -> None:
    """The bot's reaction (✅, ⛔) on an event."""
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
    room_event(tx, room_id, "m.reaction", content, f"react:{event_id}")


def conversation_notice(
    tx: Tx, conversation_id: int, text: str, idempotency_key: str, status: str | None = None
) -> None:
    """An m.notice into a conversation's room once what was queued for it before has run
    (a new conversation's room is made by its first message's delivery). `status`: a
    standing notice's kind (hub.matrix.render.STATUS_KEY), e.g. "assignment"."""
    payload: dict[str, Any] = {"conversation_id": conversation_id, "text": text}
    if status:
        payload["status"] = status
    enqueue(tx, MATRIX_NOTICE, conversation_key(conversation_id), payload, idempotency_key)
