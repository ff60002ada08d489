"""The newsletter's double opt-in through the one store path and the command runner, on SQLite
and PostgreSQL, without a homeserver: `!optin` and `!optin status` as the dispatcher runs
them, the customer's answers stored by hub.db.inbound.store_events with the opt-in's hook
(followed by a stand-in of the time-based replies, which must skip what the opt-in took)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.config import Config
from hub.consent.newsletter_flow import Newsletter
from hub.core import clock
from hub.core.bot import OK, REFUSED, CommandContext, CommandHandler, CommandRunner
from hub.core.commands import CommandRegistry, NotACommand, parse
from hub.core.types import Envelope, InboundMessage, MessageKind, Sender
from hub.db import conversations, inbound
from hub.db.database import Database, Tx
from hub.db.inbound import InboundPolicy
from hub.db.models import Conversation, Message, NewsletterOptin, OutboxItem
from hub.jobs.kinds import MATRIX_NOTICE, MATRIX_SEND

Sessions = async_sessionmaker[AsyncSession]
BERLIN = ZoneInfo("Europe/Berlin")
ROOM = "!room:shop.example"
ADVISER = "@anna:shop.example"
ANA = Sender("whatsapp", "4915112345678", "Ana")
BEN = Sender("instagram", "ig-ben", "Ben")  # a channel without buttons, here
START = datetime(2026, 12, 7, 10, 0, tzinfo=BERLIN)
LABELS = {"whatsapp": "WhatsApp", "instagram": "Instagram", "webchat": "Web chat"}

CONFIG = Config.model_validate(
    {
        "homeserver": {"url": "http://127.0.0.1:1", "domain": "shop.example"},
        "appservice": {"as_token": "a" * 32, "hs_token": "h" * 32},
        "shop": {"name": "Farben Müller", "timezone": "Europe/Berlin"},
        "newsletter": {"purpose": "Farbtipps und Angebote, einmal im Monat."},
    }
)
NEWSLETTER = Newsletter(
    CONFIG.newsletter, CONFIG.shop, lambda kind: kind != "instagram", LABELS.__getitem__
)


class Later:
    """Stands in for the time-based replies (the hook after the opt-in's)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, tx: Tx, policy: Any, message: Message, *rest: Any) -> None:
        self.seen.append(message.text or "")


LATER = Later()


def policy(channel: str) -> InboundPolicy:
    return InboundPolicy(
        channel=channel,
        code=channel[:2],
        label=LABELS[channel],
        ghost_prefix="customer_",
        domain="shop.example",
        shop_name="Farben Müller",
        after_message=(NEWSLETTER.after_message, LATER),
    )


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    clock.set_now(START)
    LATER.seen.clear()
    yield
    clock.reset()


def near(moment: datetime | None, expected: datetime) -> bool:
    """The same moment, give or take the time the test ran (the clock runs on)."""
    return moment is not None and abs(moment - expected) < timedelta(seconds=5)


def forward(**kw: float) -> None:
    clock.set_now(clock.now() + timedelta(**kw))


async def says(
    db: Database,
    text: str,
    n: str,
    sender: Sender = ANA,
    kind: MessageKind = "text",
    data: dict[str, Any] | None = None,
) -> int:
    """A customer's message through the one store path; the conversation's id."""
    envelope = Envelope(sender, InboundMessage(n, kind, text=text, data=data))
    result = await db.write(inbound.store_events, policy(sender.channel), [envelope])
    [message] = result.messages
    return message.conversation_id


async def taps(db: Database, button: dict[str, Any], n: str, sender: Sender = ANA) -> int:
    return await says(db, button["title"], n, sender, "interactive", {"id": button["id"]})


def run_command(tx: Tx, cid: int | None, body: str, event: str) -> None:
    registry: CommandRegistry[CommandHandler] = CommandRegistry()
    for spec in NEWSLETTER.specs():
        registry.register(spec)
    result = parse(body, "!", registry)
    assert not isinstance(result, NotACommand)
    conversation = conversations.conversation(tx, cid) if cid is not None else None
    ctx = CommandContext(tx, ROOM, event, ADVISER, conversation)
    CommandRunner(registry, [ADVISER]).run(ctx, result)


async def command(
    db: Database, sessions: Sessions, cid: int | None, body: str, event: str
) -> tuple[str, str]:
    """(✅ or ⛔, the bot's answer) of a command in the conversation's room."""
    await db.write(run_command, cid, body, event)
    async with sessions() as s:
        rows = (await s.scalars(select(OutboxItem).where(OutboxItem.kind == MATRIX_SEND))).all()
    out = {j.idempotency_key: j.payload for j in rows}
    reaction = out[f"{MATRIX_SEND}/react:{event}"]["content"]["m.relates_to"]["key"]
    return reaction, plain(out[f"{MATRIX_SEND}/reply:{event}:0"]["content"]["body"])


def plain(text: str) -> str:
    """CLDR's narrow no-break space ("10:00\u202fAM") as a plain one."""
    return text.replace("\u202f", " ")


async def to_customer(sessions: Sessions, cid: int) -> list[Message]:
    """What the bot queued for the customer, in order."""
    async with sessions() as s:
        query = select(Message).where(Message.direction == "out", Message.conversation_id == cid)
        return list((await s.scalars(query.order_by(Message.id))).all())


async def notices(sessions: Sessions, cid: int) -> list[str]:
    async with sessions() as s:
        query = select(OutboxItem).where(OutboxItem.kind == MATRIX_NOTICE)
        jobs = (await s.scalars(query.order_by(OutboxItem.id))).all()
    return [plain(j.payload["text"]) for j in jobs if j.payload["conversation_id"] == cid]


async def optin_row(sessions: Sessions) -> NewsletterOptin:
    async with sessions() as s:
        return (await s.scalars(select(NewsletterOptin))).one()


async def question(sessions: Sessions, cid: int) -> Any:
    async with sessions() as s:
        conversation = await s.get(Conversation, cid)
        assert conversation is not None
        open_now = (conversation.meta or {}).get("questions") or []
        return open_now[-1] if open_now else None


def button(message: Message) -> dict[str, Any]:
    assert message.data is not None
    [only] = message.data["buttons"]
    return dict(only)


# --- the double opt-in ------------------------------------------------------------------------


async def test_two_taps_opt_the_customer_in_with_both_confirmations_on_record(
    db: Database, sessions: Sessions
) -> None:
    cid = await says(db, "Hallo", "wamid.1")
    outcome, answer = await command(db, sessions, cid, "!optin", "$c1")
    assert outcome == OK
    [request] = await to_customer(sessions, cid)
    assert request.text == (
        "Farben Müller would like to send you its newsletter on WhatsApp: Farbtipps und "
        "Angebote, einmal im Monat.\n\n"
        "Would you like to receive it? Then tap “Yes, subscribe” (step 1 of 2). You can "
        "unsubscribe at any time by writing STOP."
    )
    row = await optin_row(sessions)
    assert button(request) == {"id": f"optin:{row.id}:1", "title": "Yes, subscribe"}
    assert answer == (
        "📰 Newsletter request sent to the customer; it expires 12/10/26, 10:00 AM.\n"
        + request.text
    )
    assert row.state == "requested" and row.requested_by == ADVISER and row.text_version == "1"
    assert await question(sessions, cid) == {"kind": "optin", "id": row.id}

    forward(minutes=2)
    await taps(db, button(request), "wamid.2")
    [_, second] = await to_customer(sessions, cid)
    assert second.text == (
        "Thank you! Please confirm once more that Farben Müller may send you its newsletter "
        "on WhatsApp. Please tap “Yes, confirm” (step 2 of 2)."
    )
    assert button(second) == {"id": f"optin:{row.id}:2", "title": "Yes, confirm"}
    row = await optin_row(sessions)
    assert row.state == "confirmed_once" and row.first_confirm_remote_id == "wamid.2"
    assert near(row.first_confirmed_at, clock.now())

    forward(minutes=1)
    await taps(db, button(second), "wamid.3")
    welcome = (await to_customer(sessions, cid))[-1]
    assert welcome.text == (
        "Thank you, you are now subscribed to the newsletter of Farben Müller. You can "
        "unsubscribe at any time by writing STOP."
    )
    row = await optin_row(sessions)
    assert row.state == "opted_in" and row.confirm_remote_id == "wamid.3"
    assert row.first_confirmed_at is not None and row.confirmed_at is not None
    assert row.confirmed_at - row.first_confirmed_at >= timedelta(minutes=1)
    assert await question(sessions, cid) is None
    assert await notices(sessions, cid) == [
        "📰 Newsletter: the customer confirmed once; the second confirmation was asked.",
        "📰 Newsletter: the customer confirmed twice and is subscribed.",
    ]
    # The taps were answers to the bot: the time-based replies never saw them.
    assert LATER.seen == ["Hallo"]

    # Tapping again changes nothing and sends nothing.
    await taps(db, button(request), "wamid.4")
    await taps(db, button(second), "wamid.5")
    assert len(await to_customer(sessions, cid)) == 3
    assert (await optin_row(sessions)).confirm_remote_id == "wamid.3"
    assert LATER.seen == ["Hallo"]


async def test_words_opt_in_where_the_channel_has_no_buttons(
    db: Database, sessions: Sessions
) -> None:
    cid = await says(db, "Hi", "ig.1", BEN)
    await command(db, sessions, cid, "!optin", "$c1")
    [request] = await to_customer(sessions, cid)
    assert request.data is None  # no button titles written out to type
    assert "on Instagram" in (request.text or "")
    assert "Then answer JA (step 1 of 2)." in (request.text or "")
    forward(minutes=1)
    await says(db, "Ja!", "ig.2", BEN)
    second = (await to_customer(sessions, cid))[-1]
    assert second.data is None and (second.text or "").endswith(
        "Please answer JA again (step 2 of 2)."
    )
    # The same "ja" sent twice at once is one confirmation, not both.
    forward(seconds=1)
    await says(db, "ja", "ig.3", BEN)
    assert (await optin_row(sessions)).state == "confirmed_once"
    assert len(await to_customer(sessions, cid)) == 2
    forward(minutes=1)
    await says(db, " JA ", "ig.4", BEN)
    row = await optin_row(sessions)
    assert row.state == "opted_in"
    assert (row.first_confirm_remote_id, row.confirm_remote_id) == ("ig.2", "ig.4")
    assert LATER.seen == ["Hi"]
    # Our question is answered: a "ja" now is an ordinary message.
    await says(db, "ja", "ig.5", BEN)
    assert LATER.seen == ["Hi", "ja"]


async def test_a_yes_to_no_question_or_to_another_features_question_is_not_taken(
    db: Database, sessions: Sessions
) -> None:
    cid = await says(db, "ja", "wamid.1")
    await command(db, sessions, cid, "!optin", "$c1")
    # The photo consent asked later: the newest question is its own.
    optin_q = {"kind": "optin", "id": (await optin_row(sessions)).id}
    await db.write(conversations.set_meta, cid, questions=[optin_q, {"kind": "consent", "id": 9}])
    await says(db, "ja", "wamid.2")
    assert (await optin_row(sessions)).state == "requested"
    assert LATER.seen == ["ja", "ja"]
    # A button names its request: it counts whatever the newest question.
    [request] = await to_customer(sessions, cid)
    await taps(db, button(request), "wamid.3")
    assert (await optin_row(sessions)).state == "confirmed_once"
    # Our (second) question is the newest again; the photo consent's stays open behind it.
    assert await question(sessions, cid) == {"kind": "optin", "id": (await optin_row(sessions)).id}


async def test_answering_clears_only_our_own_question(db: Database, sessions: Sessions) -> None:
    cid = await says(db, "Hallo", "wamid.1")
    await command(db, sessions, cid, "!optin", "$c1")
    [request] = await to_customer(sessions, cid)
    await taps(db, button(request), "wamid.2")
    optin_q = {"kind": "optin", "id": (await optin_row(sessions)).id}
    await db.write(conversations.set_meta, cid, questions=[optin_q, {"kind": "consent", "id": 9}])
    forward(minutes=1)
    second = (await to_customer(sessions, cid))[-1]
    await taps(db, button(second), "wamid.3")
    assert (await optin_row(sessions)).state == "opted_in"
    assert await question(sessions, cid) == {"kind": "consent", "id": 9}


# --- STOP ---------------------------------------------------------------------------------------


async def test_stop_without_an_opt_in_is_recorded_and_confirmed(
    db: Database, sessions: Sessions
) -> None:
    cid = await says(db, "STOP", "wamid.1")  # the conversation's first message
    [confirmation] = await to_customer(sessions, cid)
    assert confirmation.text == (
        "You are unsubscribed: Farben Müller will not send you its newsletter. If you change "
        "your mind, just ask us."
    )
    row = await optin_row(sessions)
    assert row.state == "opted_out" and row.opt_out_remote_id == "wamid.1"
    assert row.requested_by is None and row.opted_out_at is not None
    assert await notices(sessions, cid) == [
        "📰 Newsletter: the customer unsubscribed (wrote “STOP”)."
    ]
    assert LATER.seen == []
    # Again: confirmed again, the first opt-out stays the record.
    first_at = row.opted_out_at
    forward(hours=1)
    await says(db, "abmelden.", "wamid.2")
    row = await optin_row(sessions)
    assert (row.opted_out_at, row.opt_out_remote_id) == (first_at, "wamid.1")
    assert len(await to_customer(sessions, cid)) == 2
    assert (await notices(sessions, cid))[-1] == (
        "📰 Newsletter: the customer wrote “abmelden.” again; unsubscribed since 12/7/26, 10:00 AM."
    )


async def test_stop_after_the_opt_in_wins_over_a_later_tap_of_an_old_button(
    db: Database, sessions: Sessions
) -> None:
    cid = await says(db, "Hallo", "wamid.1")
    await command(db, sessions, cid, "!optin", "$c1")
    [request] = await to_customer(sessions, cid)
    await taps(db, button(request), "wamid.2")
    forward(minutes=1)
    second = (await to_customer(sessions, cid))[-1]
    await taps(db, button(second), "wamid.3")
    forward(days=3)
    await says(db, "Stop", "wamid.4")
    row = await optin_row(sessions)
    assert row.state == "opted_out" and row.opt_out_remote_id == "wamid.4"
    assert row.confirm_remote_id == "wamid.3"  # the opt-in stays on record
    await taps(db, button(second), "wamid.5")
    assert (await optin_row(sessions)).state == "opted_out"
    assert (await to_customer(sessions, cid))[-1].text == (
        "This newsletter request is no longer valid, so you are not subscribed. If you would "
        "like to receive our newsletter, just ask us for a new request."
    )
    assert (await notices(sessions, cid))[-1].startswith(
        "📰 Newsletter: the customer confirmed an old request after unsubscribing"
    )
    # The adviser may ask again; the earlier opt-out is mentioned.
    outcome, answer = await command(db, sessions, cid, "!optin", "$c2")
    assert outcome == OK
    assert "(The customer had unsubscribed on 12/10/26, 10:01 AM.)" in answer
    assert (await optin_row(sessions)).state == "requested"


# --- expiry and repeated requests -------------------------------------------------------------


async def test_a_late_confirmation_asks_for_a_new_request_and_optin_starts_over(
    db: Database, sessions: Sessions
) -> None:
    cid = await says(db, "Hallo", "wamid.1")
    await command(db, sessions, cid, "!optin", "$c1")
    forward(hours=73)
    await says(db, "ja", "wamid.2")
    row = await optin_row(sessions)
    assert row.state == "expired" and row.first_confirmed_at is None
    assert (await to_customer(sessions, cid))[-1].text.startswith(  # type: ignore[union-attr]
        "This newsletter request is no longer valid"
    )
    assert (await notices(sessions, cid))[-1] == (
        "📰 Newsletter: the customer confirmed after the request expired (12/10/26, 10:00 AM); "
        "not subscribed. Send !optin to ask again."
    )
    assert await question(sessions, cid) is None
    assert LATER.seen == ["Hallo"]
    await says(db, "ja", "wamid.3")  # no open question now: an ordinary message
    assert LATER.seen == ["Hallo", "ja"]
    outcome, _ = await command(db, sessions, cid, "!optin", "$c2")
    assert outcome == OK
    row = await optin_row(sessions)
    assert row.state == "requested" and near(row.expires_at, clock.now() + timedelta(hours=72))


async def test_optin_again_resends_the_open_question_and_is_refused_once_opted_in(
    db: Database, sessions: Sessions
) -> None:
    cid = await says(db, "Hallo", "wamid.1")
    await command(db, sessions, cid, "!optin", "$c1")
    forward(hours=1)
    outcome, answer = await command(db, sessions, cid, "!optin", "$c2")
    assert outcome == OK
    assert answer.startswith(
        "📰 The newsletter request was sent again; it now expires 12/10/26, 11:00 AM."
    )
    first, again = await to_customer(sessions, cid)
    assert again.text == first.text and button(again) == button(first)
    await taps(db, button(first), "wamid.2")
    forward(hours=1)
    outcome, answer = await command(db, sessions, cid, "!optin", "$c3")
    assert answer.startswith(
        "📰 The customer confirmed once (12/7/26, 11:00 AM); the second question was sent again."
    )
    second = (await to_customer(sessions, cid))[-1]
    assert button(second)["id"].endswith(":2")
    await taps(db, button(second), "wamid.3")
    outcome, answer = await command(db, sessions, cid, "!optin", "$c4")
    assert outcome == REFUSED
    assert answer == (
        "The customer is subscribed to the newsletter already (since 12/7/26, 12:00 PM)."
    )


async def test_optin_status_shows_the_state_with_its_times(
    db: Database, sessions: Sessions
) -> None:
    cid = await says(db, "Hallo", "wamid.1")
    _, answer = await command(db, sessions, cid, "!optin status", "$s1")
    assert answer == "📰 Newsletter: not asked yet (!optin sends the request)."
    await command(db, sessions, cid, "!optin", "$c1")
    [request] = await to_customer(sessions, cid)
    forward(minutes=5)
    await taps(db, button(request), "wamid.2")
    _, answer = await command(db, sessions, cid, "!optin status", "$s2")
    assert answer == (
        "📰 Newsletter: confirmed once, waiting for the second confirmation\n"
        f"Requested: 12/7/26, 10:00 AM by {ADVISER} (text version 1)\n"
        "First confirmation: 12/7/26, 10:05 AM (wamid.2)\n"
        "Expires: 12/10/26, 10:05 AM"
    )
    forward(hours=80)
    _, answer = await command(db, sessions, cid, "!optin status", "$s3")
    assert answer.startswith("📰 Newsletter: request expired without both confirmations\n")


async def test_optin_outside_a_customers_room_is_refused(db: Database, sessions: Sessions) -> None:
    outcome, answer = await command(db, sessions, None, "!optin", "$c1")
    assert (outcome, answer) == (REFUSED, "This command works in a customer's room only.")


async def test_a_button_of_a_request_that_is_gone_is_taken_and_changes_nothing(
    db: Database, sessions: Sessions
) -> None:
    cid = await says(db, "Hallo", "wamid.1")
    await taps(db, {"id": "optin:999:1", "title": "Yes, subscribe"}, "wamid.2")
    assert await to_customer(sessions, cid) == []
    async with sessions() as s:
        assert (await s.scalars(select(NewsletterOptin))).all() == []
    assert LATER.seen == ["Hallo"]
