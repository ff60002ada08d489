"""Who has which conversation: assignment, claim, handover, close and reopen, the advisers'
availability and the requeue timer, as units of work (hub.db.database).

Every change of a conversation's assignee or status reads its row for update (two advisers
claiming at once on PostgreSQL: the second waits and sees the first's claim), asks for a
lobby refresh (hub.db.lobby) and queues the room's label (advisers.room_label), in the same
transaction as the change.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from hub.advisers.routing import CLOSED, OPEN, AdviserState, requeue_at
from hub.db import conversations, timers
from hub.db.jobs import conversation_key, enqueue
from hub.db.lobby import refresh_lobby
from hub.db.models import AdviserStatus, Conversation, Timer, utcnow
from hub.db.upsert import insert_ignore
from hub.jobs.kinds import ADVISERS_ROOM_LABEL

if TYPE_CHECKING:
    from hub.db.database import Tx

REQUEUE = "requeue"  # a timer kind: has the assignee answered in time?


@dataclass(frozen=True)
class Change:
    """What a change did: the conversation after it and who had it before."""

    conversation: Conversation
    previous: str | None
    previous_status: str


# -- reads --------------------------------------------------------------------------------


def for_update(tx: Tx, conversation_id: int) -> Conversation:
    """The conversation's row, locked until the transaction ends (PostgreSQL; SQLite's
    writer lock serialises units anyway), read afresh over whatever the session held."""
    found = tx.orm.scalar(
        select(Conversation)
        .where(Conversation.id == conversation_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if found is None:
        raise LookupError(f"conversation {conversation_id} does not exist")
    return found


def adviser_states(tx: Tx, advisers: list[str]) -> dict[str, AdviserState]:
    """Round robin's view of the advisers: availability, last assignment, open count."""
    rows = tx.orm.execute(
        select(Conversation.assignee, func.count())
        .where(Conversation.status == OPEN, Conversation.assignee.in_(advisers))
        .group_by(Conversation.assignee)
    )
    counts = {str(mxid): int(n) for mxid, n in rows}
    found = tx.orm.scalars(select(AdviserStatus).where(AdviserStatus.mxid.in_(advisers)))
    status = {row.mxid: row for row in found}
    states = {}
    for mxid in advisers:
        row = status.get(mxid)
        states[mxid] = AdviserState(
            available=row.available if row is not None else True,
            last_assigned_at=row.last_assigned_at if row is not None else None,
            open_count=int(counts.get(mxid, 0)),
        )
    return states


def open_counts(tx: Tx) -> dict[str, int]:
    """Open conversations per adviser who holds any."""
    rows = tx.orm.execute(
        select(Conversation.assignee, func.count())
        .where(Conversation.status == OPEN, Conversation.assignee.is_not(None))
        .group_by(Conversation.assignee)
    )
    return {str(mxid): int(n) for mxid, n in rows}


def is_available(tx: Tx, mxid: str) -> bool:
    row = tx.orm.get(AdviserStatus, mxid)
    return row.available if row is not None else True


def timer_kind(tx: Tx, timer_id: int) -> str | None:
    """A timer's kind, so the runner hands it to whoever fires that kind."""
    return tx.orm.scalar(select(Timer.kind).where(Timer.id == timer_id))


# -- changes ------------------------------------------------------------------------------


def set_available(tx: Tx, mxid: str, available: bool) -> bool:
    """Set an adviser's availability for automatic assignment; what it was before."""
    row = _status_row(tx, mxid)
    before = row.available
    row.available = available
    row.updated_at = utcnow()
    tx.orm.flush()
    return before


def assign(tx: Tx, conversation_id: int, mxid: str, requeue_after_minutes: int) -> Change:
    """Give the conversation to an adviser (it is open from now on), note when they were
    last given one (round robin), and plan the requeue check of this assignment."""
    conversation = for_update(tx, conversation_id)
    previous, previous_status = conversation.assignee, conversation.status
    now = utcnow()
    _cancel_requeue(tx, conversation_id)
    conversation.assignee, conversation.assigned_at = mxid, now
    conversation.status, conversation.closed_at = OPEN, None
    _status_row(tx, mxid).last_assigned_at = now
    due = requeue_at(now, requeue_after_minutes)
    if due is not None:
        timers.add(
            tx,
            REQUEUE,
            f"requeue:{conversation_id}:{uuid.uuid4().hex}",
            due,
            conversation_id=conversation_id,
            payload={"assignee": mxid, "assigned_at": now.isoformat()},
        )
    _changed(tx, conversation_id)
    return Change(conversation, previous, previous_status)


def unassign(tx: Tx, conversation_id: int) -> Change:
    """Back to the lobby: nobody has it, it stays open."""
    conversation = for_update(tx, conversation_id)
    previous, previous_status = conversation.assignee, conversation.status
    _cancel_requeue(tx, conversation_id)
    conversation.assignee, conversation.assigned_at = None, None
    _changed(tx, conversation_id)
    return Change(conversation, previous, previous_status)


def close(tx: Tx, conversation_id: int) -> Change:
    """Closed: the assignee stays for the record, nothing is checked any more."""
    conversation = for_update(tx, conversation_id)
    previous, previous_status = conversation.assignee, conversation.status
    _cancel_requeue(tx, conversation_id)
    conversation.status, conversation.closed_at = CLOSED, utcnow()
    _changed(tx, conversation_id)
    return Change(conversation, previous, previous_status)


def reopen(tx: Tx, conversation_id: int) -> Change:
    """The customer wrote into a closed conversation: open again, nobody's yet, so it goes
    through routing like a new one."""
    conversation = for_update(tx, conversation_id)
    previous, previous_status = conversation.assignee, conversation.status
    _cancel_requeue(tx, conversation_id)
    conversation.status, conversation.closed_at = OPEN, None
    conversation.assignee, conversation.assigned_at = None, None
    _changed(tx, conversation_id)
    return Change(conversation, previous, previous_status)


def entered_lobby(tx: Tx, conversation_id: int) -> None:
    """A new conversation nobody was given: the lobby lists it."""
    refresh_lobby(tx)
    _label(tx, conversation_id)


def requeue_timers(tx: Tx, conversation_id: int) -> list[Timer]:
    return timers.of_conversation(tx, conversation_id, REQUEUE)


def _cancel_requeue(tx: Tx, conversation_id: int) -> None:
    for timer in timers.of_conversation(tx, conversation_id, REQUEUE):
        timers.cancel(tx, timer.id)


def _changed(tx: Tx, conversation_id: int) -> None:
    # Written now: the next customer message of the same batch reads the conversation with a
    # plain SELECT (hub.db.identities), which would not see what the ORM still holds.
    tx.orm.flush()
    refresh_lobby(tx)
    _label(tx, conversation_id)


def _label(tx: Tx, conversation_id: int) -> None:
    # The handler reads the conversation afresh, so each change gets its own job (a later
    # one shows the latest state); queued on the conversation's key, after the delivery that
    # makes a new conversation's room.
    payload: dict[str, Any] = {"conversation_id": conversation_id}
    enqueue(
        tx,
        ADVISERS_ROOM_LABEL,
        conversation_key(conversation_id),
        payload,
        f"{conversation_id}:{uuid.uuid4().hex}",
    )


def _status_row(tx: Tx, mxid: str) -> AdviserStatus:
    insert_ignore(
        tx, AdviserStatus, {"mxid": mxid, "available": True, "updated_at": utcnow()}, ["mxid"]
    )
    row = tx.orm.scalar(
        select(AdviserStatus)
        .where(AdviserStatus.mxid == mxid)
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row


def label_state(tx: Tx, conversation_id: int) -> tuple[Conversation | None, str | None]:
    """A conversation and the label its room shows now (conversation meta `room_label`)."""
    conversation = tx.orm.get(Conversation, conversation_id)
    if conversation is None:
        return None, None
    return conversation, (conversation.meta or {}).get("room_label")


def set_label(tx: Tx, conversation_id: int, label: str) -> None:
    """Remember the room's label, so an unchanged one is not sent again."""
    conversation = conversations.locked(tx, conversation_id)
    if conversation is not None:
        conversation.meta = {**(conversation.meta or {}), "room_label": label}
