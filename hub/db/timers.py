"""Timers as units of work: rows that are due at a wall-clock moment (hub.db.models.Timer).

A unit that adds a timer lists it on its transaction (`tx.timers`); once that commits, the
database hands it to the timer sink (hub.scheduler.runner), which arms an alarm for it.
Firing claims the row with a conditional UPDATE (pending → fired), so of several hub
processes, or an alarm and the start-up sweep, only one fires it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from hub.db.models import MissedConversation, Timer, utcnow
from hub.db.upsert import insert_ignore

if TYPE_CHECKING:
    from hub.db.database import Tx

SCHEDULED = "scheduled"  # a message an adviser scheduled (!schedule)
OPENING = "opening"  # the round at an opening: "we're back", closed reply windows
MISSED = "missed"  # did an adviser answer in time?


def add(
    tx: Tx,
    kind: str,
    key: str,
    due_at: datetime,
    *,
    conversation_id: int | None = None,
    payload: dict[str, Any] | None = None,
    created_by: str | None = None,
) -> int | None:
    """A new timer; None when one with this key exists already."""
    values = {
        "kind": kind,
        "key": key,
        "due_at": due_at,
        "conversation_id": conversation_id,
        "payload": payload,
        "created_by": created_by,
        "status": "pending",
        "created_at": utcnow(),
        "done_at": None,
    }
    if not insert_ignore(tx, Timer, values, ["key"]):
        return None
    timer_id = tx.orm.scalar(select(Timer.id).where(Timer.key == key))
    assert timer_id is not None
    tx.timers.append((timer_id, due_at))
    return int(timer_id)


def pending(tx: Tx, due_before: datetime | None = None) -> list[tuple[int, datetime]]:
    """(id, due) of the pending timers, soonest first (those due before a moment)."""
    query = select(Timer.id, Timer.due_at).where(Timer.status == "pending")
    if due_before is not None:
        query = query.where(Timer.due_at < due_before)
    return [(int(i), due) for i, due in tx.orm.execute(query.order_by(Timer.due_at))]


def claim(tx: Tx, timer_id: int, now: datetime) -> Timer | None:
    """The timer, marked fired, if it was pending and is due; None otherwise (fired by
    someone else, cancelled, or not due)."""
    got = tx.orm.execute(
        update(Timer)
        .where(Timer.id == timer_id, Timer.status == "pending", Timer.due_at <= now)
        .values(status="fired", done_at=now)
        .returning(Timer.id)
    ).scalar()
    if got is None:
        return None
    return tx.orm.get(Timer, timer_id)


def finish(tx: Tx, timer: Timer, status: str) -> None:
    """A claimed timer that did not do its work (e.g. "dropped": too late)."""
    timer.status = status


def of_conversation(tx: Tx, conversation_id: int, kind: str) -> list[Timer]:
    """The pending timers of one kind of a conversation, soonest first."""
    return list(
        tx.orm.scalars(
            select(Timer)
            .where(
                Timer.conversation_id == conversation_id,
                Timer.kind == kind,
                Timer.status == "pending",
            )
            .order_by(Timer.due_at, Timer.id)
        )
    )


def due_at(tx: Tx, kind: str, moment: datetime) -> list[Timer]:
    """The timers of one kind due at exactly this moment, whatever their status (the round
    at an opening looks at the conversations it covers)."""
    query = select(Timer).where(Timer.kind == kind, Timer.due_at == moment).order_by(Timer.id)
    return list(tx.orm.scalars(query))


def cancel(
    tx: Tx, timer_id: int, conversation_id: int | None = None, *, kind: str | None = None
) -> bool:
    """Cancel a pending timer (of this conversation and kind, when given); False if there
    was none."""
    query = update(Timer).where(Timer.id == timer_id, Timer.status == "pending")
    if conversation_id is not None:
        query = query.where(Timer.conversation_id == conversation_id)
    if kind is not None:
        query = query.where(Timer.kind == kind)
    done = tx.orm.execute(query.values(status="cancelled", done_at=utcnow()).returning(Timer.id))
    return done.scalar() is not None


def cancel_key(tx: Tx, key: str) -> None:
    tx.orm.execute(
        update(Timer)
        .where(Timer.key == key, Timer.status == "pending")
        .values(status="cancelled", done_at=utcnow())
    )


def set_aside(tx: Tx, timer_id: int) -> None:
    """A pending timer whose firing keeps failing: out of the way, kept for inspection."""
    tx.orm.execute(
        update(Timer)
        .where(Timer.id == timer_id, Timer.status == "pending")
        .values(status="failed", done_at=utcnow())
    )


def record_missed(tx: Tx, conversation_id: int, message_id: int | None, since: datetime) -> None:
    tx.orm.add(
        MissedConversation(
            conversation_id=conversation_id,
            message_id=message_id,
            since=since,
            recorded_at=utcnow(),
        )
    )
