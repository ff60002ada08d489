"""The matrix.event handler (hub.matrix.dispatcher) on SQLite and PostgreSQL, without a
homeserver: who speaks to the customer. An adviser's message, file or reaction is queued for
the customer; anyone else's stays in the room, which is told once per sender and
conversation; commands stay the runner's (refused for non-advisers)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.bot import CommandHandler, CommandRunner, help_command
from hub.core.commands import CommandRegistry
from hub.core.types import Envelope, InboundMessage, Sender
from hub.db import conversations, inbound
from hub.db.database import Database, Tx
from hub.db.inbound import InboundPolicy
from hub.db.jobs import room_key
from hub.db.models import Conversation, Message, OutboxItem
from hub.jobs.job import Job
from hub.jobs.kinds import CHANNEL_REACT, CHANNEL_SEND, MATRIX_EVENT, MATRIX_SEND
from hub.matrix.dispatcher import Dispatcher

Sessions = async_sessionmaker[AsyncSession]
DOMAIN = "shop.example"
ANNA = f"@anna:{DOMAIN}"  # the shop's adviser
BOB = f"@bob:{DOMAIN}"  # in the room, not an adviser
CAROL = "@carol:other.example"
LOBBY = f"!lobby:{DOMAIN}"

POLICY = InboundPolicy(
    channel="whatsapp",
    code="wa",
    label="WhatsApp",
    ghost_prefix="customer_",
    domain=DOMAIN,
    shop_name="Farben Müller",
)


def is_own(mxid: str) -> bool:
    return mxid.startswith("@customer_") or mxid == f"@shopbot:{DOMAIN}"


def dispatcher(db: Database, advisers: list[str] | None = None) -> Dispatcher:
    registry: CommandRegistry[CommandHandler] = CommandRegistry()
    registry.register(help_command(registry, "!"))
    return Dispatcher(db, is_own, registry, CommandRunner(registry, [ANNA]), "!", advisers=advisers)


async def portal(db: Database, phone: str, room_id: str) -> tuple[int, str]:
    """A customer's conversation with its room; (its id, the customer message's event id)."""
    customer = Sender("whatsapp", phone, "Ana")
    result = await db.write(
        inbound.store_events,
        POLICY,
        [Envelope(customer, InboundMessage(f"w-{phone}", "text", text="Hallo"))],
    )
    [message] = result.messages
    event_id = f"$customer-{phone}"

    def place(tx: Tx) -> None:
        conversations.set_room(tx, message.conversation_id, room_id, "WhatsApp · Ana")
        conversations.update_message(tx, message.id, matrix_event_id=event_id)

    await db.write(place)
    return message.conversation_id, event_id


class Room:
    """Events into one room, run by the dispatcher the way the job worker runs them."""

    def __init__(self, db: Database, handler: Dispatcher, room_id: str) -> None:
        self.db = db
        self.handler = handler
        self.room_id = room_id
        self.n = 0

    async def push(self, sender: str, type_: str, content: dict[str, Any]) -> str:
        self.n += 1
        event = {
            "event_id": f"${self.room_id[1:6]}-{self.n}",
            "room_id": self.room_id,
            "type": type_,
            "sender": sender,
            "content": content,
        }
        job = Job(self.n, MATRIX_EVENT, room_key(self.room_id), event, 0)
        finish = await self.handler.handle(job)
        if finish is not None:
            await self.db.write(finish)
        return str(event["event_id"])

    async def text(self, sender: str, body: str) -> str:
        return await self.push(sender, "m.room.message", {"msgtype": "m.text", "body": body})

    async def image(self, sender: str) -> str:
        content = {
            "msgtype": "m.image",
            "body": "swatch.png",
            "url": f"mxc://{DOMAIN}/swatch",
            "info": {"mimetype": "image/png", "size": 10},
        }
        return await self.push(sender, "m.room.message", content)

    async def react(self, sender: str, target: str, key: str = "👍") -> str:
        rel = {"rel_type": "m.annotation", "event_id": target, "key": key}
        return await self.push(sender, "m.reaction", {"m.relates_to": rel})


async def jobs(sessions: Sessions, kind: str) -> list[OutboxItem]:
    async with sessions() as s:
        query = select(OutboxItem).where(OutboxItem.kind == kind).order_by(OutboxItem.id)
        return list((await s.scalars(query)).all())


async def to_customer(sessions: Sessions) -> list[tuple[str | None, str | None]]:
    """The messages stored for customers: (sender, text)."""
    async with sessions() as s:
        rows = await s.scalars(
            select(Message).where(Message.direction == "out").order_by(Message.id)
        )
        return [(m.sender_mxid, m.text) for m in rows]


async def room_notices(sessions: Sessions, room_id: str) -> list[dict[str, Any]]:
    return [
        j.payload["content"]
        for j in await jobs(sessions, MATRIX_SEND)
        if j.payload["room_id"] == room_id and j.payload["event_type"] == "m.room.message"
    ]


def outsider_notice(mxid: str) -> str:
    return f"{mxid} is not one of the shop's advisers: their messages do not reach the customer."


async def test_an_advisers_message_file_and_reaction_reach_the_customer(
    db: Database, sessions: Sessions
) -> None:
    _, customer_event = await portal(db, "4915100000001", "!p1:shop.example")
    room = Room(db, dispatcher(db), "!p1:shop.example")
    await room.text(ANNA, "Guten Tag!")
    await room.image(ANNA)
    await room.react(ANNA, customer_event)
    assert await to_customer(sessions) == [(ANNA, "Guten Tag!"), (ANNA, None)]
    assert len(await jobs(sessions, CHANNEL_SEND)) == 2
    assert [j.payload["emoji"] for j in await jobs(sessions, CHANNEL_REACT)] == ["👍"]
    assert await room_notices(sessions, room.room_id) == []


async def test_a_non_adviser_does_not_speak_to_the_customer_and_the_room_is_told_once(
    db: Database, sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "hub.matrix.dispatcher")
    cid, customer_event = await portal(db, "4915100000002", "!p2:shop.example")
    room = Room(db, dispatcher(db), "!p2:shop.example")
    first = await room.text(BOB, "I can tell her myself")
    await room.text(BOB, "hello?")
    await room.image(BOB)
    await room.push(BOB, "m.room.message", {"msgtype": "m.emote", "body": "waves"})
    await room.react(BOB, customer_event)
    assert await to_customer(sessions) == []
    assert await jobs(sessions, CHANNEL_SEND) == []
    assert await jobs(sessions, CHANNEL_REACT) == []
    # One notice for Bob, a reply to his first message; the conversation remembers it.
    [notice] = await room_notices(sessions, room.room_id)
    assert notice["msgtype"] == "m.notice"
    assert notice["body"] == outsider_notice(BOB)
    assert notice["m.relates_to"] == {"m.in_reply_to": {"event_id": first}}
    async with sessions() as s:
        conversation = await s.get(Conversation, cid)
        assert conversation is not None and conversation.meta is not None
        assert conversation.meta["not_advisers_told"] == [BOB]
    logged = [r.getMessage() for r in caplog.records if r.name == "hub.matrix.dispatcher"]
    assert len(logged) == 5 and all(r.levelno == logging.INFO for r in caplog.records)
    assert logged[0] == f"{first} from {BOB} in {room.room_id} not relayed to the customer: " + (
        "not an adviser"
    )

    # "Once" outlives the job queue's memory: the notice's job is purged after a week.
    async with sessions() as s:
        await s.execute(delete(OutboxItem).where(OutboxItem.kind == MATRIX_SEND))
        await s.commit()
    await room.text(BOB, "still here")
    assert await room_notices(sessions, room.room_id) == []

    # Someone else is told about separately; the adviser still gets through.
    await room.react(CAROL, customer_event, "❤️")
    await room.text(ANNA, "Ich bin Anna, Ihre Beraterin.")
    assert [n["body"] for n in await room_notices(sessions, room.room_id)] == [
        outsider_notice(CAROL)
    ]
    assert await to_customer(sessions) == [(ANNA, "Ich bin Anna, Ihre Beraterin.")]
    async with sessions() as s:
        conversation = await s.get(Conversation, cid)
        assert conversation is not None and conversation.meta is not None
        assert conversation.meta["not_advisers_told"] == [BOB, CAROL]

    # Another conversation: Bob is told there too.
    await portal(db, "4915100000003", "!p3:shop.example")
    other = Room(db, dispatcher(db), "!p3:shop.example")
    await other.text(BOB, "hi")
    await other.text(BOB, "hi again")
    assert [n["body"] for n in await room_notices(sessions, other.room_id)] == [
        outsider_notice(BOB)
    ]
    assert await to_customer(sessions) == [(ANNA, "Ich bin Anna, Ihre Beraterin.")]


async def test_what_would_not_reach_the_customer_anyway_gets_no_notice(
    db: Database, sessions: Sessions
) -> None:
    """Another bot's notices, edits, state events, malformed reactions, rooms that are not
    portals: nothing is relayed, so nobody is told."""
    await portal(db, "4915100000004", "!p4:shop.example")
    room = Room(db, dispatcher(db), "!p4:shop.example")
    await room.push(BOB, "m.room.message", {"msgtype": "m.notice", "body": "bot says"})
    await room.push(BOB, "m.room.member", {"membership": "join"})
    await room.push(BOB, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation"}})
    edit = {
        "msgtype": "m.text",
        "body": "* fixed",
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"},
    }
    await room.push(BOB, "m.room.message", edit)
    lobby = Room(db, dispatcher(db), LOBBY)
    await lobby.text(BOB, "morning all")
    await lobby.react(BOB, "$something")
    assert await jobs(sessions, MATRIX_SEND) == []
    assert await to_customer(sessions) == []


async def test_commands_of_non_advisers_stay_refused(db: Database, sessions: Sessions) -> None:
    await portal(db, "4915100000005", "!p5:shop.example")
    room = Room(db, dispatcher(db), "!p5:shop.example")
    event_id = await room.text(BOB, "!help")
    out = {j.idempotency_key: j.payload for j in await jobs(sessions, MATRIX_SEND)}
    assert out[f"{MATRIX_SEND}/react:{event_id}"]["content"]["m.relates_to"]["key"] == "⛔"
    assert out[f"{MATRIX_SEND}/reply:{event_id}:0"]["content"]["body"] == (
        "Only the shop's advisers can run commands."
    )
    assert len(out) == 2  # no "does not reach the customer" notice: a command never would
    assert await to_customer(sessions) == []


async def test_who_speaks_is_the_runners_advisers_unless_given(
    db: Database, sessions: Sessions
) -> None:
    assert dispatcher(db).advisers == frozenset({ANNA})
    await portal(db, "4915100000006", "!p6:shop.example")
    # An explicit list (an expert allowed to answer, say) decides alone.
    room = Room(db, dispatcher(db, advisers=[ANNA, BOB]), "!p6:shop.example")
    await room.text(BOB, "Expert here")
    await room.text(CAROL, "me too")
    assert await to_customer(sessions) == [(BOB, "Expert here")]
    assert [n["body"] for n in await room_notices(sessions, room.room_id)] == [
        outsider_notice(CAROL)
    ]
