"""The bot's answers that depend on the time, through the one store path and the timers, on
SQLite and PostgreSQL, with the hub's clock moved to the moment each test needs.

The shop (Europe/Berlin): Monday to Saturday 09:00-13:00 and 14:00-18:00, closed on Sundays
and the public holidays of Nordrhein-Westfalen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.config import Config
from hub.core import clock
from hub.core.bot import OK, REFUSED, CommandContext, CommandHandler, CommandRunner
from hub.core.commands import CommandRegistry, NotACommand, parse
from hub.core.types import Envelope, InboundMessage, Sender
from hub.db import conversations, inbound, outbound, timers
from hub.db.database import Database, Tx
from hub.db.engine import open_database
from hub.db.inbound import InboundPolicy
from hub.db.models import Message, MissedConversation, OutboxItem, Timer
from hub.jobs.kinds import CHANNEL_SEND, MATRIX_NOTICE, MATRIX_SEND
from hub.scheduler.automations import HERE_BUTTON_ID, Automations
from hub.scheduler.commands import SchedulerCommands
from hub.scheduler.holiday_dates import holiday_dates
from hub.scheduler.runner import TimerRunner

Sessions = async_sessionmaker[AsyncSession]
BERLIN = ZoneInfo("Europe/Berlin")
ROOM = "!room:shop.example"
LOBBY = "!lobby:shop.example"
ADVISER = "@anna:shop.example"
ANA = Sender("webchat", "visitor-ana", "Ana")
WA_ANA = Sender("whatsapp", "4915112345678", "Ana")


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BERLIN)


SATURDAY_EVENING = at(2026, 12, 5, 19, 0)
SUNDAY = at(2026, 12, 6, 11, 0)
MONDAY_OPENING = at(2026, 12, 7, 9, 0)


NW_HOLIDAYS = holiday_dates("DE", "NW", "en_US", range(2025, 2029))


def make_automations(**sections: Any) -> Automations:
    config = Config.model_validate(
        {
            "homeserver": {"url": "http://127.0.0.1:1", "domain": "shop.example"},
            "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32},
            "shop": {"timezone": "Europe/Berlin", "lobby_room": LOBBY},
            "hours": {
                "weekly": {d: "9-13, 14-18" for d in ("mon", "tue", "wed", "thu", "fri", "sat")},
                "holidays": {"country": "DE", "region": "NW"},
            },
            "replies": {"greeting": {"enabled": True}, "back": {"enabled": True}},
            **sections,
        }
    )
    return Automations(
        hours=config.hours,
        replies=config.replies,
        missed=config.missed,
        scheduled=config.scheduled,
        schedule=config.hours.schedule("Europe/Berlin", NW_HOLIDAYS),
        shop_name="Farben Müller",
        lobby_room=LOBBY,
    )


AUTOMATIONS = make_automations()


def policy(channel: str = "webchat", automations: Automations = AUTOMATIONS) -> InboundPolicy:
    return InboundPolicy(
        channel=channel,
        code=channel[:3],
        label=channel,
        ghost_prefix="customer_",
        domain="shop.example",
        shop_name="Farben Müller",
        reply_window=timedelta(hours=24) if channel == "whatsapp" else None,
        after_message=(automations.after_message,),
    )


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    yield
    clock.reset()


async def write(db: Database, text: str, n: str, sender: Sender = ANA, **kw: Any) -> int:
    """A customer's message through the one store path; the conversation's id."""
    envelope = Envelope(sender, InboundMessage(n, "text", text=text))
    result = await db.write(inbound.store_events, policy(sender.channel, **kw), [envelope])
    [message] = result.messages
    return message.conversation_id


async def jobs(sessions: Sessions, kind: str) -> list[OutboxItem]:
    async with sessions() as s:
        query = select(OutboxItem).where(OutboxItem.kind == kind).order_by(OutboxItem.id)
        return list((await s.scalars(query)).all())


async def sent_texts(sessions: Sessions) -> list[str]:
    """What the bot and advisers queued for the customer, in order."""
    async with sessions() as s:
        query = select(Message).where(Message.direction == "out").order_by(Message.id)
        return [m.text or "" for m in (await s.scalars(query)).all()]


async def notice_texts(sessions: Sessions) -> list[str]:
    texts = [j.payload["text"] for j in await jobs(sessions, MATRIX_NOTICE)]
    sent = [j.payload["content"] for j in await jobs(sessions, MATRIX_SEND)]
    return texts + [c["body"] for c in sent if "body" in c]


async def pending_timers(sessions: Sessions) -> list[Timer]:
    async with sessions() as s:
        query = select(Timer).where(Timer.status == "pending").order_by(Timer.due_at, Timer.id)
        return list((await s.scalars(query)).all())


async def fire_due(db: Database, automations: Automations = AUTOMATIONS) -> int:
    """Fire every due timer as the runner's sweep does; how many fired."""
    due = await db.read(timers.pending, clock.now() + timedelta(seconds=1))
    fired = 0
    for timer_id, _due in due:
        fired += bool(await db.write(automations.fire, timer_id))
    return fired


async def adviser_reply(db: Database, conversation_id: int, text: str, event: str) -> None:
    values = {"kind": "text", "text": text, "matrix_event_id": event, "sender_mxid": ADVISER}
    await db.write(outbound.adviser_message, conversation_id, values, None)


# --- holding replies --------------------------------------------------------------------------


async def test_a_sunday_message_gets_one_holding_reply_and_the_room_a_notice(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(SUNDAY)
    cid = await write(db, "Haben Sie die Farbe Salbei?", "m1")
    texts = await sent_texts(sessions)
    assert texts[0].startswith("Hello and welcome to Farben Müller!")  # the greeting
    assert texts[1] == (
        "Thank you for your message! We are closed today. Our advisers will answer you from "
        "Monday, 9:00 AM."
    )
    [notice] = await jobs(sessions, MATRIX_NOTICE)
    assert notice.payload == {
        "conversation_id": cid,
        "text": f"🤖 Holding reply sent to the customer: {texts[1]}",
    }
    # A second message in the same closed period: no second holding reply, no greeting.
    clock.set_now(SUNDAY + timedelta(hours=2))
    await write(db, "Hallo?", "m2")
    assert len(await sent_texts(sessions)) == 2
    assert len(await jobs(sessions, MATRIX_NOTICE)) == 1
    # The "we're back" round and the missed-conversation check wait for Monday.
    kinds = [(t.kind, t.due_at) for t in await pending_timers(sessions)]
    assert kinds == [
        ("back", MONDAY_OPENING),
        ("missed", MONDAY_OPENING + timedelta(minutes=15)),
    ]


async def test_an_advisers_recent_reply_holds_back_the_holding_reply(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(SUNDAY)
    cid = await write(db, "Hallo", "m1", automations=make_automations(replies={}))
    assert len(await sent_texts(sessions)) == 1  # the holding reply
    await adviser_reply(db, cid, "Ich bin heute ausnahmsweise da.", "$r1")
    # Monday's lunch break is a new closed period, but the adviser answered 5 minutes ago.
    clock.set_now(at(2026, 12, 7, 13, 0))
    await adviser_reply(db, cid, "Noch eine Frage?", "$r2")
    clock.set_now(at(2026, 12, 7, 13, 5))
    await write(db, "Ja, noch eine", "m2", automations=make_automations(replies={}))
    assert len(await sent_texts(sessions)) == 3  # 1 holding + 2 adviser replies
    clock.set_now(at(2026, 12, 7, 13, 20))
    await write(db, "Hallo?", "m3", automations=make_automations(replies={}))
    assert (await sent_texts(sessions))[-1].startswith("Thank you for your message! Our shop is")


async def test_away_answers_during_opening_hours_until_it_is_over(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(at(2026, 12, 8, 10, 0))
    cid = await write(db, "Hallo", "m1")
    until = at(2026, 12, 10, 9, 0)
    await db.write(
        conversations.set_meta,
        cid,
        away_until=until.isoformat(),
        away_text="Bin im Urlaub bis {next_opening}.",
    )
    await write(db, "Sind Sie da?", "m2")
    await write(db, "Hallo??", "m3")
    texts = await sent_texts(sessions)
    assert texts[1:] == ["Bin im Urlaub bis Thursday, 9:00 AM."]
    clock.set_now(at(2026, 12, 10, 10, 0))
    await write(db, "Jetzt?", "m4")
    assert len(await sent_texts(sessions)) == 2


# --- the opening --------------------------------------------------------------------------------


async def test_we_are_back_goes_out_once_at_the_opening_unless_an_adviser_answered(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(SUNDAY)
    answered = await write(db, "Hallo", "a1", Sender("webchat", "visitor-bo", "Bo"))
    waiting = await write(db, "Hallo", "m1")
    clock.set_now(SUNDAY + timedelta(hours=1))
    await adviser_reply(db, answered, "Guten Tag, wie kann ich helfen?", "$r1")
    before = len(await sent_texts(sessions))
    clock.set_now(MONDAY_OPENING + timedelta(seconds=1))
    assert await fire_due(db) == 2  # both "we're back" timers; the missed ones are not due
    texts = await sent_texts(sessions)
    assert texts[before:] == ["Farben Müller is open again: an adviser will answer you shortly."]
    async with sessions() as s:
        back = (await s.scalars(select(Message).order_by(Message.id.desc()))).first()
    assert back is not None and back.conversation_id == waiting
    assert await fire_due(db) == 0  # fired once, never twice


async def test_a_closed_whatsapp_window_is_told_and_listed_in_the_lobby_at_the_opening(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(SATURDAY_EVENING)
    cid = await write(db, "Ist die Farbe vorrätig?", "wamid.1", WA_ANA)
    await db.write(conversations.set_room, cid, ROOM, "Ana (WhatsApp)")
    async with sessions() as s:
        holding = (await s.scalars(select(Message).where(Message.direction == "out"))).all()[-1]
    assert "please tap “I'm here” when you read this" in (holding.text or "")
    assert holding.data == {"buttons": [{"id": HERE_BUTTON_ID, "title": "I'm here"}]}
    assert {t.kind for t in await pending_timers(sessions)} == {"back", "opening", "missed"}
    clock.set_now(MONDAY_OPENING + timedelta(seconds=1))
    await fire_due(db)
    notices = await notice_texts(sessions)
    assert any(n.startswith("⏳ The customer's reply window closed") for n in notices)
    [lobby] = [j for j in await jobs(sessions, MATRIX_SEND) if j.payload["room_id"] == LOBBY]
    assert lobby.payload["content"]["body"] == (
        "⏳ Reply windows that closed while the shop was closed (a template is needed):\n"
        f"• Ana (WhatsApp): https://matrix.to/#/{ROOM}"
    )
    # No "we're back" into a closed window: it could not be delivered.
    assert not any("is open again" in t for t in await sent_texts(sessions))


async def test_a_tap_on_i_am_here_reopens_the_window_and_the_customer_gets_we_are_back(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(SATURDAY_EVENING)
    cid = await write(db, "Hallo", "wamid.1", WA_ANA)
    await db.write(conversations.set_room, cid, ROOM, "Ana (WhatsApp)")
    clock.set_now(at(2026, 12, 7, 8, 30))  # Monday morning, before the opening
    await write(db, "I'm here", "wamid.2", WA_ANA)
    clock.set_now(MONDAY_OPENING + timedelta(seconds=1))
    await fire_due(db)
    assert (await sent_texts(sessions))[-1].startswith("Farben Müller is open again")
    assert not [j for j in await jobs(sessions, MATRIX_SEND) if j.payload["room_id"] == LOBBY]


# --- missed conversations -------------------------------------------------------------------------


async def test_a_conversation_nobody_answers_in_opening_time_is_missed_once(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(at(2026, 12, 7, 12, 50))
    cid = await write(db, "Hallo", "m1")
    await db.write(conversations.set_room, cid, ROOM, "Ana (Web chat)")
    await write(db, "Hallo?", "m2")  # already watched: no second check
    [check] = await pending_timers(sessions)
    # 10 minutes before lunch, 5 after
    assert abs(check.due_at - at(2026, 12, 7, 14, 5)) < timedelta(seconds=1)
    clock.set_now(at(2026, 12, 7, 14, 6))
    assert await fire_due(db) == 1
    async with sessions() as s:
        [missed] = (await s.scalars(select(MissedConversation))).all()
    assert missed.conversation_id == cid
    assert abs(missed.since - at(2026, 12, 7, 12, 50)) < timedelta(seconds=1)
    [lobby] = [j for j in await jobs(sessions, MATRIX_SEND) if j.payload["room_id"] == LOBBY]
    assert lobby.payload["content"]["body"] == (
        "⏰ Missed: Ana (Web chat) waits for an answer since Monday, 12:50 PM: "
        f"https://matrix.to/#/{ROOM}"
    )
    # The next message is watched again.
    await write(db, "Noch da?", "m3")
    assert len(await pending_timers(sessions)) == 1


async def test_an_answered_conversation_is_not_missed_and_is_watched_again(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(at(2026, 12, 7, 10, 0))
    cid = await write(db, "Hallo", "m1")
    clock.set_now(at(2026, 12, 7, 10, 5))
    await adviser_reply(db, cid, "Guten Tag!", "$r1")
    clock.set_now(at(2026, 12, 7, 10, 7))
    await write(db, "Danke, noch eine Frage", "m2")  # a new check: answered since the first
    assert len(await pending_timers(sessions)) == 2
    clock.set_now(at(2026, 12, 7, 10, 16))
    assert await fire_due(db) == 1  # the first check: answered, nothing recorded
    async with sessions() as s:
        assert (await s.scalars(select(MissedConversation))).all() == []
    clock.set_now(at(2026, 12, 7, 10, 23))
    assert await fire_due(db) == 1
    async with sessions() as s:
        assert len((await s.scalars(select(MissedConversation))).all()) == 1


# --- scheduled messages -------------------------------------------------------------------------


def run_command(tx: Tx, cid: int, body: str, event: str) -> None:
    """An adviser's command in the conversation's room, as the dispatcher runs it."""
    registry: CommandRegistry[CommandHandler] = CommandRegistry()
    for spec in SchedulerCommands(AUTOMATIONS).specs():
        registry.register(spec)
    result = parse(body, "!", registry)
    assert not isinstance(result, NotACommand)
    ctx = CommandContext(tx, ROOM, event, ADVISER, conversations.conversation(tx, cid))
    CommandRunner(registry, [ADVISER]).run(ctx, result)


async def command(
    db: Database, sessions: Sessions, cid: int, body: str, event: str
) -> tuple[str, str]:
    """(✅ or ⛔, the bot's answer) of a command."""
    await db.write(run_command, cid, body, event)
    out = {j.idempotency_key: j.payload for j in await jobs(sessions, MATRIX_SEND)}
    reaction = out[f"{MATRIX_SEND}/react:{event}"]["content"]["m.relates_to"]["key"]
    return reaction, out[f"{MATRIX_SEND}/reply:{event}:0"]["content"]["body"]


async def test_a_scheduled_message_is_sent_once_when_due(db: Database, sessions: Sessions) -> None:
    clock.set_now(at(2026, 12, 4, 16, 0))  # Friday
    cid = await write(db, "Wann ist meine Farbe da?", "m1")
    outcome, answer = await command(
        db, sessions, cid, "!schedule mo 9:00 Ihre Farbe ist da!", "$c1"
    )
    assert outcome == OK
    [timer] = [t for t in await pending_timers(sessions) if t.kind == "scheduled"]
    assert answer == (
        f"🕒 Scheduled #{timer.id} for Monday, 9:00 AM: Ihre Farbe ist da!\n"
        f"Cancel it with !schedule cancel {timer.id}."
    )
    assert timer.due_at == MONDAY_OPENING and timer.created_by == ADVISER
    _, listing = await command(db, sessions, cid, "!schedule list", "$c2")
    assert f"#{timer.id} · Monday, 9:00 AM · {ADVISER}: Ihre Farbe ist da!" in listing
    before = await sent_texts(sessions)
    clock.set_now(MONDAY_OPENING + timedelta(seconds=2))
    await fire_due(db)
    await fire_due(db)
    assert (await sent_texts(sessions))[len(before) :] == ["Ihre Farbe ist da!"]
    async with sessions() as s:
        sent = (await s.scalars(select(Message).where(Message.text == "Ihre Farbe ist da!"))).one()
    assert sent.sender_mxid == ADVISER
    sends = [j for j in await jobs(sessions, CHANNEL_SEND) if j.payload["message_id"] == sent.id]
    assert len(sends) == 1
    assert any(
        n.startswith(f"🕒 Scheduled message #{timer.id} sent") for n in await notice_texts(sessions)
    )


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        (
            "!schedule 2026-12-01 10:00 Zu spät",
            "«2026-12-01 10:00» (Tue 2026-12-01 10:00) is in the past",
        ),
        ("!schedule irgendwann Hallo", "«irgendwann» is not a time"),
        ("!schedule in 2h", "What should be sent? Write the text after the time."),
        ("!schedule cancel 999", "No pending scheduled message #999 in this conversation."),
        ("!schedule cancel abc", "«abc» is not a number"),
    ],
)
async def test_a_bad_schedule_is_refused_and_nothing_is_queued(
    db: Database, sessions: Sessions, body: str, answer: str
) -> None:
    clock.set_now(at(2026, 12, 4, 16, 0))
    cid = await write(db, "Hallo", "m1")
    before = [t.id for t in await pending_timers(sessions)]
    outcome, text = await command(db, sessions, cid, body, "$bad")
    assert outcome == REFUSED
    assert answer in text
    assert [t.id for t in await pending_timers(sessions)] == before


async def test_a_cancelled_schedule_is_not_sent_and_cannot_be_cancelled_again(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(at(2026, 12, 4, 16, 0))
    cid = await write(db, "Hallo", "m1")
    await command(db, sessions, cid, "!schedule in 2h Rückruf", "$c1")
    [timer] = [t for t in await pending_timers(sessions) if t.kind == "scheduled"]
    outcome, text = await command(db, sessions, cid, f"!schedule cancel #{timer.id}", "$c2")
    assert (outcome, text) == (OK, f"Scheduled message #{timer.id} cancelled.")
    outcome, text = await command(db, sessions, cid, f"!schedule cancel {timer.id}", "$c3")
    assert outcome == REFUSED and "No pending scheduled message" in text
    clock.set_now(at(2026, 12, 4, 18, 1))
    await fire_due(db)
    assert "Rückruf" not in await sent_texts(sessions)


async def test_a_message_due_long_before_the_start_is_dropped_with_a_notice(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(at(2026, 12, 4, 16, 0))
    cid = await write(db, "Hallo", "m1")
    await command(db, sessions, cid, "!schedule in 1h Zu spät", "$c1")
    clock.set_now(at(2026, 12, 4, 18, 30))  # the hub was down: due 17:00, 90 minutes late
    await fire_due(db)
    assert "Zu spät" not in await sent_texts(sessions)
    async with sessions() as s:
        timer = (await s.scalars(select(Timer).where(Timer.kind == "scheduled"))).one()
    assert timer.status == "dropped"
    notices = await notice_texts(sessions)
    assert any("it is 90 minutes late and was not sent: Zu spät" in n for n in notices), notices


async def test_hours_and_away_commands(db: Database, sessions: Sessions) -> None:
    clock.set_now(at(2026, 12, 5, 17, 0))  # Saturday
    cid = await write(db, "Hallo", "m1")
    _, hours = await command(db, sessions, cid, "!hours", "$h")
    lines = hours.replace("\u202f", " ").splitlines()  # CLDR: a narrow space before PM
    assert lines[0] == "Open now, until Saturday, 6:00 PM."
    assert lines[2] == "Saturday, December 5: 9:00 AM–1:00 PM, 2:00 PM–6:00 PM"
    assert lines[3] == "Sunday, December 6: closed"
    outcome, answer = await command(
        db, sessions, cid, "!away bis di 10:00 Bin ab Dienstag zurück.", "$a"
    )
    assert outcome == OK and answer.startswith("Away until Tuesday, 10:00 AM")
    meta = (await db.read(conversations.conversation, cid)).meta  # type: ignore[union-attr]
    assert meta["away_text"] == "Bin ab Dienstag zurück."
    outcome, answer = await command(db, sessions, cid, "!away off", "$b")
    assert outcome == OK
    meta = (await db.read(conversations.conversation, cid)).meta  # type: ignore[union-attr]
    assert meta["away_until"] is None


# --- the runner ---------------------------------------------------------------------------------


async def test_the_runner_fires_a_timer_on_time_and_rearms_pending_ones_after_a_restart(
    db: Database, sessions: Sessions
) -> None:
    cid = await write(db, "Hallo", "m1")
    runner = TimerRunner(db, AUTOMATIONS, sweep_seconds=3600)
    await runner.start()
    try:
        soon = clock.now() + timedelta(milliseconds=300)
        await db.write(
            lambda tx: timers.add(
                tx,
                timers.SCHEDULED,
                "t1",
                soon,
                conversation_id=cid,
                payload={"text": "Gleich"},
                created_by=ADVISER,
            )
        )
        await wait_for(lambda: "Gleich" in texts_now, sessions)
    finally:
        await runner.stop()
    # Armed while no runner runs (the hub is down), then started: re-armed from its row.
    later = clock.now() + timedelta(milliseconds=300)
    await db.write(
        lambda tx: timers.add(
            tx,
            timers.SCHEDULED,
            "t2",
            later,
            conversation_id=cid,
            payload={"text": "Später"},
            created_by=ADVISER,
        )
    )
    runner = TimerRunner(db, AUTOMATIONS, sweep_seconds=3600)
    await runner.start()
    try:
        await wait_for(lambda: "Später" in texts_now, sessions)
    finally:
        await runner.stop()


texts_now: list[str] = []


async def wait_for(condition: Any, sessions: Sessions, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        texts_now[:] = await sent_texts(sessions)
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not met in {timeout}s: {texts_now}")


async def test_two_hub_processes_on_one_database_send_a_due_message_once(
    db: Database, db_url: str, sessions: Sessions
) -> None:
    cid = await write(db, "Hallo", "m1")
    other = open_database(db_url)
    runners = [TimerRunner(d, AUTOMATIONS, sweep_seconds=0.05) for d in (db, other)]
    try:
        for runner in runners:
            await runner.start()
        due = clock.now() + timedelta(milliseconds=200)
        # Added by the other process: this one only finds it with its sweep.
        await other.write(
            lambda tx: timers.add(
                tx,
                timers.SCHEDULED,
                "t1",
                due,
                conversation_id=cid,
                payload={"text": "Einmal"},
                created_by=ADVISER,
            )
        )
        await wait_for(lambda: "Einmal" in texts_now, sessions)
        await asyncio.sleep(0.5)  # both sweeps ran several times since
    finally:
        for runner in runners:
            await runner.stop()
        await other.close()
    assert (await sent_texts(sessions)).count("Einmal") == 1


# --- found in review ------------------------------------------------------------------------------


async def test_two_messages_in_one_webhook_batch_get_one_holding_reply_and_one_check(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(SUNDAY)
    batch = [
        Envelope(WA_ANA, InboundMessage(f"wamid.{n}", "text", text=f"Hallo {n}")) for n in (1, 2)
    ]
    await db.write(inbound.store_events, policy("whatsapp"), batch)
    async with sessions() as s:
        out = (await s.scalars(select(Message).where(Message.direction == "out"))).all()
    assert [m.text[:26] for m in out if m.text] == [
        "Hello and welcome to Farbe",
        "Thank you for your message",
    ]
    assert len(await jobs(sessions, CHANNEL_SEND)) == 2  # every row has its send
    assert [t.kind for t in await pending_timers(sessions)] == ["back", "missed"]


async def test_an_away_text_with_braces_never_blocks_the_customers_messages(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(at(2026, 12, 8, 10, 0))
    cid = await write(db, "Hallo", "m1")
    outcome, _ = await command(db, sessions, cid, "!away bis mi 10:00 Bin gleich zurück :-}", "$a")
    assert outcome == OK
    await write(db, "Hallo?", "m2")
    assert (await sent_texts(sessions))[-1] == "Bin gleich zurück :-}"


async def test_a_second_message_in_the_closed_period_does_not_hide_a_closed_window(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(SATURDAY_EVENING)
    cid = await write(db, "Hallo", "wamid.1", WA_ANA)
    await db.write(conversations.set_room, cid, ROOM, "Ana (WhatsApp)")
    clock.set_now(SATURDAY_EVENING + timedelta(hours=1))  # the window now closes Sunday 20:00
    await write(db, "Noch was", "wamid.2", WA_ANA)
    clock.set_now(MONDAY_OPENING + timedelta(seconds=1))
    await fire_due(db)
    assert any(
        n.startswith("⏳ The customer's reply window closed") for n in await notice_texts(sessions)
    )
    [lobby] = [j for j in await jobs(sessions, MATRIX_SEND) if j.payload["room_id"] == LOBBY]
    assert "Ana (WhatsApp)" in lobby.payload["content"]["body"]
    assert not any("is open again" in t for t in await sent_texts(sessions))


async def test_away_on_whatsapp_explains_the_button_and_plans_no_we_are_back(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(at(2026, 12, 9, 10, 0))  # Wednesday
    cid = await write(db, "Hallo", "wamid.1", WA_ANA)
    outcome, _ = await command(db, sessions, cid, "!away bis fr 10:00", "$a")
    assert outcome == OK
    await write(db, "Hallo?", "wamid.2", WA_ANA)
    async with sessions() as s:
        away = (await s.scalars(select(Message).order_by(Message.id.desc()))).first()
    assert away is not None and away.data is not None  # the "I'm here" button
    assert (away.text or "").startswith("Thank you for your message! Your adviser will answer")
    assert "please tap “I'm here”" in (away.text or "")
    assert [t.kind for t in await pending_timers(sessions)] == ["missed"]


async def test_max_late_zero_still_sends_what_a_running_hub_fires_on_time(
    db: Database, sessions: Sessions
) -> None:
    automations = make_automations(scheduled={"max_late_minutes": 0})
    clock.set_now(at(2026, 12, 4, 16, 0))
    cid = await write(db, "Hallo", "m1")
    await command(db, sessions, cid, "!schedule in 1h Pünktlich", "$c1")
    clock.set_now(at(2026, 12, 4, 17, 0) + timedelta(seconds=5))  # the sweep's few seconds
    await fire_due(db, automations)
    assert "Pünktlich" in await sent_texts(sessions)


async def test_a_scheduled_message_counts_as_the_advisers_answer(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(at(2026, 12, 7, 10, 0))
    cid = await write(db, "Wann kommt die Farbe?", "m1")
    await command(db, sessions, cid, "!schedule in 5 min Morgen früh!", "$c1")
    clock.set_now(at(2026, 12, 7, 10, 20))
    await fire_due(db)
    assert "Morgen früh!" in await sent_texts(sessions)
    async with sessions() as s:
        assert (await s.scalars(select(MissedConversation))).all() == []


async def test_away_without_a_time_lasts_until_the_next_days_opening(
    db: Database, sessions: Sessions
) -> None:
    clock.set_now(at(2026, 12, 8, 11, 0))  # Tuesday morning: the lunch break is not "back"
    cid = await write(db, "Hallo", "m1")
    outcome, answer = await command(db, sessions, cid, "!away", "$a")
    assert outcome == OK
    assert answer.startswith("Away until Wednesday, 9:00")
