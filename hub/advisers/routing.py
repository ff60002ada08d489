"""Who may do what with a conversation, and who gets the next one. Pure."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

OPEN, CLOSED = "open", "closed"


def may_answer(assignee: str | None, sender: str, others_may_answer: bool) -> bool:
    """Whether an adviser's message reaches the customer: always for the assignee and for an
    unassigned conversation; for the others as `routing.others_may_answer` says."""
    return others_may_answer or assignee is None or assignee == sender


@dataclass(frozen=True)
class AdviserState:
    """What round robin knows of one adviser (hub.db.models.AdviserStatus, and a count)."""

    available: bool = True  # an adviser without a status row has never said otherwise
    last_assigned_at: datetime | None = None
    open_count: int = 0


def next_assignee(
    advisers: Sequence[str],
    states: Mapping[str, AdviserState],
    max_open: int,
    exclude: Collection[str] = (),
) -> str | None:
    """The adviser who gets the next conversation: of the available ones below the cap (and
    not excluded), the one assigned least recently; never assigned comes first, and ties go
    by the order of `shop.advisers`, so a fresh team is served in the order it is listed.
    None when nobody qualifies: the conversation waits in the lobby."""
    best: tuple[bool, datetime | None, int] | None = None
    chosen: str | None = None
    for index, mxid in enumerate(advisers):
        state = states.get(mxid, AdviserState())
        if mxid in exclude or not state.available or state.open_count >= max_open:
            continue
        last = state.last_assigned_at
        # (ever assigned, when, position): False sorts first, so the never-assigned lead.
        key = (last is not None, last, index)
        if best is None or _earlier(key, best):
            best, chosen = key, mxid
    return chosen


def _earlier(a: tuple[bool, datetime | None, int], b: tuple[bool, datetime | None, int]) -> bool:
    # A plain tuple comparison would compare None with a datetime when both were never
    # assigned and differ only in position; spelled out instead.
    if a[0] != b[0]:
        return not a[0]
    if a[1] is not None and b[1] is not None and a[1] != b[1]:
        return a[1] < b[1]
    return a[2] < b[2]


def requeue_at(assigned_at: datetime, requeue_after_minutes: int) -> datetime | None:
    """When an unanswered assignment goes back to the lobby; None when it never does."""
    if requeue_after_minutes <= 0:
        return None
    return assigned_at + timedelta(minutes=requeue_after_minutes)


@dataclass(frozen=True)
class Assignment:
    """A conversation's assignment as it is now, or as a requeue timer was planned for."""

    assignee: str | None
    assigned_at: datetime | None
    status: str = OPEN


def should_requeue(
    current: Assignment,
    planned: Assignment,
    last_adviser_reply_at: datetime | None,
    now: datetime,
    requeue_after_minutes: int,
) -> bool:
    """Whether a requeue timer that fired takes the conversation from its assignee: only
    the assignment it was planned for (not a later claim, handover or close), only when it
    is due, and only when no adviser has answered the customer since the assignment."""
    if current.status != OPEN or current.assignee is None or current.assigned_at is None:
        return False
    if (current.assignee, current.assigned_at) != (planned.assignee, planned.assigned_at):
        return False
    due = requeue_at(current.assigned_at, requeue_after_minutes)
    if due is None or now < due:
        return False
    return last_adviser_reply_at is None or last_adviser_reply_at < current.assigned_at


def enters_routing(status_before: str | None) -> bool:
    """A customer's message that puts a conversation up for assignment: the first of a new
    conversation (no status before) or one in a closed conversation (it reopens)."""
    return status_before is None or status_before == CLOSED


def room_label(base: str, assignee_name: str | None, status: str) -> str:
    """The room's name with who has it: "WhatsApp · Kim Müller · 👤 Anna"; "✔" once it is
    closed (whoever had it), the plain name while it waits in the lobby."""
    if status == CLOSED:
        return f"{base} · ✔"
    if assignee_name:
        return f"{base} · 👤 {assignee_name}"
    return base


def display_name_fallback(mxid: str) -> str:
    """A name for an adviser without a display name: the localpart ("@anna:shop" → "anna")."""
    return mxid[1:].partition(":")[0] if mxid.startswith("@") else mxid
