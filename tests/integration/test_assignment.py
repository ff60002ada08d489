"""Claim and assign, close and reopen, the requeue timer and the room's label, through the one
store path, the command runner and the timer runner, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.advisers.assignment import Assignment
from hub.advisers.labels import RoomLabels
from hub.app import make_automations
from hub.config import Config
from hub.config.advisers import RoutingConfig
from hub.core import clock
from hub.core.bot import OK, REFUSED, CommandContext, CommandHandler, CommandRunner
from hub.core.commands import CommandRegistry, NotACommand, parse
from hub.core.types import Envelope, InboundMessage, Sender
from hub.db import assignments, conversations, inbound, outbound, timers
from hub.db.database import Database, Tx
from hub.db.inbound import InboundPolicy
from hub.db.models import AdviserStatus, Conversation, Message, OutboxItem, Timer
from hub.jobs.job import Job
from hub.jobs.kinds import ADVISERS_LOBBY, ADVISERS_ROOM_LABEL, MATRIX_NOTICE, MATRIX_SEND
from hub.scheduler.runner import TimerRunner

Sessions = async_sessionmaker[AsyncSession]
ANNA, BEN = "@anna:shop.example", "@ben:shop.example"
BOB = "@bob:shop.example"  # not an adviser
ADVISERS = [ANNA, BEN]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


# The runner's automations, for the timers that are not requeue checks (none here).
AUTOMATIONS = make_automations(
    Config.model_validate(
        {
            "homeserver": {"url": "http://127.0.0.1:1", "domain": "shop.example"},
            "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32},
        }
    ),
    None,
)


def make(**routing: Any) -> Assignment:
    return Assignment(RoutingConfig.model_validate(routing), list(ADVISERS))


def policy(assignment: Assignment) -> InboundPolicy:
    return InboundPolicy(
        channel="webchat",
        code="web",
        label="Webchat",
        ghost_prefix="customer_",
        domain="shop.example",
        shop_name="Farben Müller",
        after_message=(assignment.after_message,),
    )


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    clock.set_now(T0)
    yield
    clock.reset()


async def write(db: Database, assignment: Assignment, who: str, text: str, n: str) -> int:
    """A customer's message through the one store path; the conversation's id."""
    envelope = Envelope(Sender("webchat", who, who.title()), InboundMessage(n, "text", text=text))
    result = await db.write(inbound.store_events, policy(assignment), [envelope])
    [message] = result.messages
    return message.conversation_id


async def conversation(sessions: Sessions, cid: int) -> Conversation:
    async with sessions() as s:
        found = await s.get(Conversation, cid)
        assert found is not None
        return found


async def jobs(sessions: Sessions, kind: str) -> list[OutboxItem]:
    async with sessions() as s:
        query = select(OutboxItem).where(OutboxItem.kind == kind).order_by(OutboxItem.id)
        return list((await s.scalars(query)).all())


async def room_notices(sessions: Sessions, cid: int) -> list[str]:
    return [
        j.payload["text"]
        for j in await jobs(sessions, MATRIX_NOTICE)
        if j.payload["conversation_id"] == cid
    ]


async def pending_requeues(sessions: Sessions, cid: int) -> list[Timer]:
    async with sessions() as s:
        query = select(Timer).where(
            Timer.conversation_id == cid, Timer.kind == "requeue", Timer.status == "pending"
        )
        return list((await s.scalars(query)).all())


def near(a: datetime, b: datetime) -> bool:
    """The hub's clock runs on from where a test set it."""
    return abs(a - b) < timedelta(seconds=5)


def room(cid: int) -> str:
    return f"!room{cid}:shop.example"


def run_command(
    tx: Tx, assignment: Assignment, cid: int | None, body: str, event: str, sender: str
) -> None:
    """An adviser's command in a room, as the dispatcher runs it (cid None: not a portal)."""
    registry: CommandRegistry[CommandHandler] = CommandRegistry()
    for spec in assignment.specs():
        registry.register(spec)
    result = parse(body, "!", registry)
    assert not isinstance(result, NotACommand)
    found = conversations.conversation(tx, cid) if cid is not None else None
    where = room(cid) if cid is not None else "!lobby:shop.example"
    ctx = CommandContext(tx, where, event, sender, found)
    CommandRunner(registry, ADVISERS).run(ctx, result)


async def command(
    db: Database,
    sessions: Sessions,
    assignment: Assignment,
    cid: int | None,
    body: str,
    event: str,
    sender: str = ANNA,
) -> tuple[str, dict[str, Any]]:
    """(✅ or ⛔, the bot's answer's content) of a command."""
    await db.write(run_command, assignment, cid, body, event, sender)
    out = {j.idempotency_key: j.payload for j in await jobs(sessions, MATRIX_SEND)}
    reaction = out[f"{MATRIX_SEND}/react:{event}"]["content"]["m.relates_to"]["key"]
    return reaction, out[f"{MATRIX_SEND}/reply:{event}:0"]["content"]


async def counts(sessions: Sessions) -> tuple[int, int]:
    """(lobby refreshes, room label jobs) queued so far. The refreshes queued are then taken
    as run: a change while one is still unstarted queues none (hub.db.lobby.refresh_lobby),
    so without this each test would see only its first."""
    counted = (
        len(await jobs(sessions, ADVISERS_LOBBY)),
        len(await jobs(sessions, ADVISERS_ROOM_LABEL)),
    )
    async with sessions() as s, s.begin():
        await s.execute(
            update(OutboxItem)
            .where(OutboxItem.kind == ADVISERS_LOBBY, OutboxItem.status == "pending")
            .values(status="done")
        )
    return counted


# --- automatic assignment ---------------------------------------------------------------------


async def test_new_conversations_go_round_robin_and_each_change_refreshes_lobby_and_label(
    db: Database, sessions: Sessions
) -> None:
    assignment = make(auto_assign=True, requeue_after_minutes=15)
    first = await write(db, assignment, "kim", "Hallo", "m1")
    clock.set_now(T0 + timedelta(minutes=1))
    second = await write(db, assignment, "lea", "Hallo", "m2")
    clock.set_now(T0 + timedelta(minutes=2))
    third = await write(db, assignment, "max", "Hallo", "m3")
    assert [(await conversation(sessions, c)).assignee for c in (first, second, third)] == [
        ANNA,
        BEN,
        ANNA,
    ]
    assert await room_notices(sessions, second) == [f"👤 Assigned to {BEN}."]
    # Three label jobs; one lobby refresh, not yet started, covers all three changes.
    assert await counts(sessions) == (1, 3)
    [label] = [
        j
        for j in await jobs(sessions, ADVISERS_ROOM_LABEL)
        if j.payload == {"conversation_id": second}
    ]
    assert label.ordering_key == f"conv:{second}"
    # The requeue check of each assignment.
    [timer] = await pending_requeues(sessions, second)
    assert timer.payload is not None and timer.payload["assignee"] == BEN
    assigned_at = datetime.fromisoformat(timer.payload["assigned_at"])
    assert near(assigned_at, T0 + timedelta(minutes=1))
    assert timer.due_at == assigned_at + timedelta(minutes=15)
    # A further message in an open conversation changes nothing.
    await write(db, assignment, "lea", "Noch da?", "m4")
    assert (await conversation(sessions, second)).assignee == BEN
    assert await counts(sessions) == (1, 3)


async def test_the_cap_and_unavailable_advisers_are_passed_by(
    db: Database, sessions: Sessions
) -> None:
    assignment = make(max_open_per_adviser=1)
    first = await write(db, assignment, "kim", "Hallo", "m1")
    outcome, answer = await command(db, sessions, assignment, None, "!unavailable", "$u1", BEN)
    assert outcome == OK and "unavailable" in answer["body"]
    second = await write(db, assignment, "lea", "Hallo", "m2")
    # Anna holds one (the cap), Ben is unavailable: the lobby.
    assert (await conversation(sessions, first)).assignee == ANNA
    assert (await conversation(sessions, second)).assignee is None
    assert await room_notices(sessions, second) == []
    assert await counts(sessions) == (1, 2)
    outcome, _ = await command(db, sessions, assignment, None, "!available", "$a1", BEN)
    assert outcome == OK
    third = await write(db, assignment, "max", "Hallo", "m3")
    assert (await conversation(sessions, third)).assignee == BEN
    async with sessions() as s:
        status = await s.get(AdviserStatus, BEN)
    assert status is not None and status.available


async def test_without_auto_assign_new_conversations_wait_and_a_customers_claim_is_text(
    db: Database, sessions: Sessions
) -> None:
    assignment = make(auto_assign=False)
    cid = await write(db, assignment, "kim", "!claim", "m1")
    found = await conversation(sessions, cid)
    assert found.assignee is None and found.status == "open"
    assert await counts(sessions) == (1, 1)  # listed in the lobby
    async with sessions() as s:
        [message] = (await s.scalars(select(Message))).all()
    assert message.text == "!claim" and message.direction == "in"
    assert await jobs(sessions, MATRIX_SEND) == []  # no command ran


# --- commands ---------------------------------------------------------------------------------


async def test_claim_takes_it_over_and_says_from_whom(db: Database, sessions: Sessions) -> None:
    assignment = make()
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    assert (await conversation(sessions, cid)).assignee == ANNA
    before = await counts(sessions)
    outcome, answer = await command(db, sessions, assignment, cid, "!claim", "$c1", BEN)
    assert (outcome, answer["body"]) == (
        OK,
        f"You have this conversation now (taken over from {ANNA}).",
    )
    assert (await conversation(sessions, cid)).assignee == BEN
    assert await counts(sessions) == (before[0] + 1, before[1] + 1)
    # Anna's requeue check is cancelled, Ben's planned.
    [timer] = await pending_requeues(sessions, cid)
    assert timer.payload is not None and timer.payload["assignee"] == BEN
    outcome, answer = await command(db, sessions, assignment, cid, "!claim", "$c2", BEN)
    assert (outcome, answer["body"]) == (OK, "You have this conversation already.")


async def test_claim_of_an_unassigned_conversation(db: Database, sessions: Sessions) -> None:
    assignment = make(auto_assign=False)
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    outcome, answer = await command(db, sessions, assignment, cid, "!claim", "$c1", BEN)
    assert (outcome, answer["body"]) == (OK, "You have this conversation now.")
    assert (await conversation(sessions, cid)).assignee == BEN


async def test_assign_refuses_someone_who_is_not_an_adviser(
    db: Database, sessions: Sessions
) -> None:
    assignment = make(auto_assign=False)
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    outcome, answer = await command(db, sessions, assignment, cid, f"!assign {BOB}", "$a1")
    assert outcome == REFUSED
    assert answer["body"] == (f"{BOB} is not one of the shop's advisers; they are: {ANNA}, {BEN}")
    assert (await conversation(sessions, cid)).assignee is None
    # A localpart is enough when it names one adviser.
    outcome, answer = await command(db, sessions, assignment, cid, "!assign @ben", "$a2")
    assert (outcome, answer["body"]) == (OK, f"👤 Assigned to {BEN}.")
    assert f'href="https://matrix.to/#/{BEN}"' in answer["formatted_body"]
    assert (await conversation(sessions, cid)).assignee == BEN
    outcome, answer = await command(db, sessions, assignment, cid, f"!assign {BEN}", "$a3")
    assert (outcome, answer["body"]) == (REFUSED, f"{BEN} has this conversation already.")


async def test_unassign_puts_it_back_into_the_lobby(db: Database, sessions: Sessions) -> None:
    assignment = make()
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    lobby, labels = await counts(sessions)
    outcome, answer = await command(db, sessions, assignment, cid, "!unassign", "$u1", BEN)
    assert outcome == OK and ANNA in answer["body"]
    found = await conversation(sessions, cid)
    assert found.assignee is None and found.assigned_at is None and found.status == "open"
    assert await pending_requeues(sessions, cid) == []
    assert await counts(sessions) == (lobby + 1, labels + 1)
    outcome, answer = await command(db, sessions, assignment, cid, "!unassign", "$u2", BEN)
    assert (outcome, answer["body"]) == (
        REFUSED,
        "Nobody has this conversation: it is in the lobby already.",
    )


async def test_handover_with_a_note_mentions_the_new_assignee(
    db: Database, sessions: Sessions
) -> None:
    assignment = make()
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    outcome, answer = await command(
        db, sessions, assignment, cid, f"!handover {BEN} Kundin will <Lack> in Salbei", "$h1"
    )
    assert outcome == OK
    assert answer["body"] == (
        f"🤝 {BEN}, {ANNA} hands this conversation over to you: Kundin will <Lack> in Salbei"
    )
    assert answer["formatted_body"] == (
        f'🤝 <a href="https://matrix.to/#/{BEN}">{BEN}</a>, {ANNA} hands this conversation '
        "over to you: Kundin will &lt;Lack&gt; in Salbei"
    )
    assert (await conversation(sessions, cid)).assignee == BEN
    outcome, answer = await command(db, sessions, assignment, cid, f"!handover {ANNA}", "$h2", BEN)
    assert (outcome, answer["body"]) == (
        OK,
        f"🤝 {ANNA}, {BEN} hands this conversation over to you.",
    )


async def test_close_keeps_the_assignee_and_a_customers_message_reopens_and_routes_it(
    db: Database, sessions: Sessions
) -> None:
    assignment = make(requeue_after_minutes=15)
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    outcome, answer = await command(db, sessions, assignment, cid, "!close", "$x1")
    assert (outcome, answer["body"]) == (
        OK,
        "Conversation closed. It opens again when the customer writes.",
    )
    found = await conversation(sessions, cid)
    assert (found.status, found.assignee) == ("closed", ANNA)
    assert found.closed_at is not None and near(found.closed_at, T0)
    assert await pending_requeues(sessions, cid) == []
    outcome, answer = await command(db, sessions, assignment, cid, "!close", "$x2")
    assert (outcome, answer["body"]) == (REFUSED, "This conversation is closed already.")
    lobby, labels = await counts(sessions)
    clock.set_now(T0 + timedelta(hours=2))
    await write(db, assignment, "kim", "Noch eine Frage", "m2")
    found = await conversation(sessions, cid)
    # Reopened and routed again: Ben has waited longest.
    assert (found.status, found.closed_at, found.assignee) == ("open", None, BEN)
    assert (await room_notices(sessions, cid))[-2:] == [
        "↩️ The customer wrote again: the conversation is open.",
        f"👤 Assigned to {BEN}.",
    ]
    # Reopened, then assigned: two labels, one refresh for both (it had not started).
    assert await counts(sessions) == (lobby + 1, labels + 2)


async def test_commands_refused_to_non_advisers_and_outside_a_customers_room(
    db: Database, sessions: Sessions
) -> None:
    assignment = make()
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    outcome, answer = await command(db, sessions, assignment, cid, "!claim", "$n1", BOB)
    assert (outcome, answer["body"]) == (REFUSED, "Only the shop's advisers can run commands.")
    assert (await conversation(sessions, cid)).assignee == ANNA
    outcome, answer = await command(db, sessions, assignment, None, "!claim", "$n2", BEN)
    assert (outcome, answer["body"]) == (
        REFUSED,
        "This command works in a customer's room only.",
    )
    outcome, answer = await command(db, sessions, assignment, None, "!close", "$n3", BEN)
    assert outcome == REFUSED


# --- the requeue timer ------------------------------------------------------------------------


async def fire_due(db: Database, assignment: Assignment) -> int:
    """Fire every due timer through the runner's unit of work; how many fired."""
    runner = TimerRunner(db, AUTOMATIONS, firers=(assignment.fire,))
    due = await db.read(timers.pending, clock.now() + timedelta(seconds=1))
    for timer_id, _due in due:
        await runner.fire(timer_id)
    return len(due)


async def test_an_unanswered_assignment_goes_to_the_next_adviser(
    db: Database, sessions: Sessions
) -> None:
    assignment = make(requeue_after_minutes=15)
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    assert (await conversation(sessions, cid)).assignee == ANNA
    clock.set_now(T0 + timedelta(minutes=14))
    assert await fire_due(db, assignment) == 0
    lobby, labels = await counts(sessions)
    clock.set_now(T0 + timedelta(minutes=15, seconds=1))
    assert await fire_due(db, assignment) == 1
    found = await conversation(sessions, cid)
    assert found.assignee == BEN
    assert (await room_notices(sessions, cid))[-2:] == [
        f"⏰ {ANNA} has not answered for 15 minutes: back in the lobby.",
        f"👤 Assigned to {BEN}.",
    ]
    assert await counts(sessions) == (lobby + 1, labels + 2)  # one refresh covers both
    # Ben does not answer either: back to Anna (only the one who let it wait is passed by).
    clock.set_now(T0 + timedelta(minutes=31))
    assert await fire_due(db, assignment) == 1
    assert (await conversation(sessions, cid)).assignee == ANNA


async def test_requeue_with_nobody_else_leaves_it_in_the_lobby(
    db: Database, sessions: Sessions
) -> None:
    assignment = Assignment(RoutingConfig(requeue_after_minutes=5), [ANNA])
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    clock.set_now(T0 + timedelta(minutes=6))
    await fire_due(db, assignment)
    assert (await conversation(sessions, cid)).assignee is None
    assert await pending_requeues(sessions, cid) == []


async def test_an_advisers_reply_makes_the_requeue_a_no_op(
    db: Database, sessions: Sessions
) -> None:
    assignment = make(requeue_after_minutes=15)
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    clock.set_now(T0 + timedelta(minutes=3))
    values = {"kind": "text", "text": "Guten Tag!", "matrix_event_id": "$r1", "sender_mxid": ANNA}
    await db.write(outbound.adviser_message, cid, values, None)
    notices_before = await room_notices(sessions, cid)
    clock.set_now(T0 + timedelta(minutes=16))
    assert await fire_due(db, assignment) == 1
    assert (await conversation(sessions, cid)).assignee == ANNA
    assert await room_notices(sessions, cid) == notices_before
    async with sessions() as s:
        [timer] = (await s.scalars(select(Timer).where(Timer.kind == "requeue"))).all()
    assert timer.status == "fired"


async def test_no_requeue_timer_when_requeue_is_off(db: Database, sessions: Sessions) -> None:
    assignment = make(requeue_after_minutes=0)
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    assert (await conversation(sessions, cid)).assignee == ANNA
    assert await pending_requeues(sessions, cid) == []


# --- the room's label -------------------------------------------------------------------------


class FakeMatrix:
    def __init__(self) -> None:
        self.states: list[tuple[str, str, dict[str, Any]]] = []
        self.lookups: list[str] = []

    async def display_name(self, mxid: str) -> str | None:
        self.lookups.append(mxid)
        return {ANNA: "Anna Adviser"}.get(mxid)

    async def put_state(
        self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
    ) -> str:
        self.states.append((room_id, event_type, content))
        return "$state"


async def run_label(db: Database, labels: RoomLabels, cid: int) -> None:
    job = Job(1, ADVISERS_ROOM_LABEL, f"conv:{cid}", {"conversation_id": cid}, 0)
    finish = await labels.label(job)
    if finish is not None:
        await db.write(finish)


async def test_the_room_name_shows_who_has_it_and_closed(db: Database, sessions: Sessions) -> None:
    assignment = make()
    cid = await write(db, assignment, "kim", "Hallo", "m1")
    matrix = FakeMatrix()
    labels = RoomLabels(db, matrix)  # type: ignore[arg-type]
    await run_label(db, labels, cid)
    assert matrix.states == []  # no room yet
    await db.write(conversations.set_room, cid, room(cid), "Webchat · Kim")
    await run_label(db, labels, cid)
    assert matrix.states == [
        (room(cid), "m.room.name", {"name": "Webchat · Kim · 👤 Anna Adviser"})
    ]
    await run_label(db, labels, cid)  # unchanged: not sent again
    assert len(matrix.states) == 1
    await command(db, sessions, assignment, cid, f"!assign {BEN}", "$a1")
    await run_label(db, labels, cid)
    assert matrix.states[-1][2] == {"name": "Webchat · Kim · 👤 ben"}  # no display name
    await command(db, sessions, assignment, cid, "!close", "$x1", BEN)
    await run_label(db, labels, cid)
    assert matrix.states[-1][2] == {"name": "Webchat · Kim · ✔"}
    await command(db, sessions, assignment, cid, "!unassign", "$u0", BEN)  # closed: refused
    await write(db, assignment, "kim", "Hallo?", "m2")  # reopened, to Anna
    await run_label(db, labels, cid)
    assert matrix.states[-1][2] == {"name": "Webchat · Kim · 👤 Anna Adviser"}
    assert matrix.lookups == [ANNA, BEN]  # display names are cached


async def test_open_counts(db: Database) -> None:
    assignment = make()
    await write(db, assignment, "kim", "Hallo", "m1")
    await write(db, assignment, "lea", "Hallo", "m2")
    await write(db, assignment, "max", "Hallo", "m3")
    assert await db.read(assignments.open_counts) == {ANNA: 2, BEN: 1}
