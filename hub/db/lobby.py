"""The lobby's listing, the advisers' space and the hub's own state (hub_state) as units of
work."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select

from hub.advisers.lobby import Waiting
from hub.db.context import queue_context_notice
from hub.db.conversations import set_room
from hub.db.jobs import enqueue, has_unstarted
from hub.db.models import ChannelIdentity, Conversation, HubState, Message, table, utcnow
from hub.jobs.kinds import ADVISERS_LOBBY, ADVISERS_SPACE

if TYPE_CHECKING:
    from hub.db.database import Tx

LOBBY_KEY = "lobby"
SPACE_KEY = "space"  # the space jobs' ordering key and the space's hub_state key
LISTING_KEY = "lobby_listing"  # hub_state: the listing's event, its room and its text

CV = table(Conversation)
CI = table(ChannelIdentity)
M = table(Message)


def refresh_lobby(tx: Tx, tick: str | None = None) -> None:
    """Queue bringing the lobby's listing up to date, after whatever this transaction
    changed (a new, claimed, assigned, closed or reopened conversation). The refresh reads
    the state afresh and does nothing when the listing would not change, so queuing one per
    change costs little and several in a row collapse into one edit. `tick` names a
    periodic refresh (its minute): every hub process of a database asks for it, one job
    comes of it."""
    # A burst of new conversations would otherwise queue one each (11 134 after 10 000 first
    # messages, bench/README.md); one that has not read the state yet sees this change.
    if has_unstarted(tx, LOBBY_KEY):
        return
    key = f"tick:{tick}" if tick else f"refresh:{uuid.uuid4().hex}"
    enqueue(tx, ADVISERS_LOBBY, LOBBY_KEY, {}, key)


# -- the hub's own state (hub_state) ----------------------------------------------------------


def get_state(tx: Tx, key: str) -> dict[str, Any] | None:
    """The JSON value kept under `key` ("lobby_listing", "space"), None when there is none."""
    row = tx.orm.get(HubState, key)
    return dict(row.value) if row is not None else None


def set_state(tx: Tx, key: str, value: dict[str, Any]) -> None:
    """Keep `value` under `key`. The jobs that write a key run one at a time (one ordering
    key each), so there is no concurrent writer to race."""
    row = tx.orm.get(HubState, key)
    if row is None:
        tx.orm.add(HubState(key=key, value=value, updated_at=utcnow()))
    else:
        row.value = value
        row.updated_at = utcnow()


# -- the listing --------------------------------------------------------------------------------

_NOT_WAITING_KINDS = ("reaction", "edit", "notice")


def waiting_conversations(
    tx: Tx, limit: int, labels: Mapping[str, str]
) -> tuple[list[Waiting], int]:
    """The open conversations nobody has, longest waiting first (those with nothing
    unanswered last), at most `limit`, and how many there are. Each with the customer's
    first message since an adviser last answered. `labels`: channel kind → its label."""
    conn = tx.conn
    unassigned = (CV.c.status == "open", CV.c.assignee.is_(None))
    total = conn.execute(select(func.count()).select_from(CV).where(*unassigned)).scalar_one()
    if not total:
        return [], 0
    first_waiting = (
        select(func.min(M.c.id))
        .where(
            M.c.conversation_id == CV.c.id,
            M.c.direction == "in",
            M.c.kind.not_in(_NOT_WAITING_KINDS),
            or_(
                CV.c.last_adviser_reply_at.is_(None),
                M.c.created_at > CV.c.last_adviser_reply_at,
            ),
        )
        .correlate(CV)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(
            CV.c.id,
            CV.c.room_id,
            CI.c.channel,
            CI.c.display_name,
            M.c.text,
            M.c.kind,
            M.c.created_at,
        )
        .select_from(CV.join(CI, CI.c.id == CV.c.identity_id).outerjoin(M, M.c.id == first_waiting))
        .where(*unassigned)
        .order_by(M.c.created_at.is_(None), M.c.created_at, CV.c.id)
        .limit(limit)
    ).all()
    waiting = [
        Waiting(
            conversation_id=int(cid),
            channel_label=labels.get(channel, channel),
            customer_name=name,
            room_id=room_id,
            first_text=text,
            first_kind=kind,
            since=since,
        )
        for cid, room_id, channel, name, text, kind, since in rows
    ]
    return waiting, int(total)


# -- portals and the advisers' space ------------------------------------------------------------


def portal_recorded(
    tx: Tx, conversation_id: int, room_id: str, room_name: str, *, space: bool
) -> None:
    """A new portal room is the conversation's, in one transaction with what follows from it:
    the customer's context posted into it, the room a child of the advisers' space, the
    lobby's listing with a link to it."""
    set_room(tx, conversation_id, room_id, room_name)
    queue_context_notice(tx, conversation_id)
    if space:
        queue_space_child(tx, room_id)
    refresh_lobby(tx)


def queue_space_child(tx: Tx, room_id: str) -> None:
    """Make a portal a child of the advisers' space (the space made first if need be)."""
    enqueue(tx, ADVISERS_SPACE, SPACE_KEY, {"room_id": room_id}, f"child:{room_id}")


def queue_space_sync(tx: Tx) -> None:
    """At start: the space made (or its advisers invited) and every portal that is not its
    child yet added, e.g. those from before the space existed."""
    enqueue(tx, ADVISERS_SPACE, SPACE_KEY, {"sync": True}, f"sync:{uuid.uuid4().hex}")


def portal_rooms(tx: Tx) -> list[str]:
    """Every conversation's room, oldest first."""
    query = select(CV.c.room_id).where(CV.c.room_id.is_not(None)).order_by(CV.c.id)
    return [str(room) for room in tx.conn.execute(query).scalars()]


def at_start(tx: Tx) -> None:
    """What the advisers' rooms need after a start: the listing brought up to date (waiting
    times went on while the hub was down) and the space checked."""
    refresh_lobby(tx)
    queue_space_sync(tx)
