"""Canned replies and the customer's context on SQLite and PostgreSQL: `!t` through the
command runner, the job that fills in the adviser's name and queues the message to the
customer like a product card; the context's queries on a seeded database, its notice posted
and pinned, `!customer`. On a real Synapse: tests/e2e/test_lobby_space.py."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import cast

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.advisers.space import AdvisersSettings, CannedReplies, CustomerContext
from hub.commerce.cart import Cart
from hub.commerce.catalogue import Product
from hub.commerce.money import Money
from hub.commerce.service import Shop
from hub.config import CommerceConfig, ShopConfig, WhatsappConfig
from hub.config.advisers import CannedReply
from hub.core import clock
from hub.core.bot import CommandContext, CommandHandler, CommandRunner
from hub.core.commands import CommandRegistry, NotACommand, parse
from hub.db import commerce, conversations, identities
from hub.db import context as context_db
from hub.db.database import Database, Tx
from hub.db.models import ChannelIdentity, Conversation, Message, OutboxItem
from hub.jobs.job import Job
from hub.jobs.kinds import ADVISERS_CANNED, CHANNEL_SEND, MATRIX_SEND
from hub.matrix.client import MatrixClient
from tests.integration.test_lobby import FakeMatrix

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
ANNA, ROOM = "@anna:shop.example", "!room:shop.example"
PAINT = Product("AC-1", "Acrylfarbe Blau", Money(1250, "EUR"), Decimal("19"))
REPLIES = [
    CannedReply(
        name="hallo",
        text={
            "en": "Hello {customer_name}, {adviser_name} here.",
            "de": "Hallo {customer_name}, hier ist {adviser_name} von {shop_name}. {oops}",
        },
    ),
    CannedReply(
        name="Pinsel", text="Unser Pinsel, {customer_name}:", image="https://shop.test/p/pin.png"
    ),
]
SETTINGS = AdvisersSettings(
    domain="shop.example",
    bot_mxid="@shopbot:shop.example",
    alias_prefix="shop_",
    advisers=(ANNA,),
    shop_name="Farben Müller",
    locale="de_DE",
    timezone="Europe/Berlin",
    order_prefix="FM-",
    command_prefix="!",
    lobby_room=None,
    space=True,
    channel_labels={"whatsapp": "WhatsApp", "webchat": "Webchat"},
)


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    clock.set_now(NOW)
    yield
    clock.reset()


class Hub:
    def __init__(self, db: Database, sessions: Sessions) -> None:
        self.db, self.sessions = db, sessions
        self.matrix = FakeMatrix()
        self.shop = Shop(
            ShopConfig(name="Farben Müller", locale="de_DE"),
            CommerceConfig(),
            WhatsappConfig(),
            {"whatsapp": None},
            "https://shop.test",
        )
        client = cast(MatrixClient, self.matrix)
        self.canned = CannedReplies(db, client, self.shop, SETTINGS, REPLIES)
        self.context = CustomerContext(db, client, SETTINGS)
        self.registry: CommandRegistry[CommandHandler] = CommandRegistry()
        for spec in self.canned.specs() + self.context.specs():
            self.registry.register(spec)

    async def command(
        self, cid: int | None, body: str, event: str, room: str = ROOM
    ) -> tuple[str, str]:
        """(✅ or ⛔, the bot's answer or "")."""

        def run(tx: Tx) -> None:
            result = parse(body, "!", self.registry)
            assert not isinstance(result, NotACommand)
            conversation = conversations.conversation(tx, cid) if cid else None
            ctx = CommandContext(tx, room, event, ANNA, conversation)
            CommandRunner(self.registry, [ANNA]).run(ctx, result)

        await self.db.write(run)
        out = {j.idempotency_key: j.payload for j in await self.jobs(MATRIX_SEND)}
        mark = out[f"{MATRIX_SEND}/react:{event}"]["content"]["m.relates_to"]["key"]
        reply = out.get(f"{MATRIX_SEND}/reply:{event}:0")
        return mark, reply["content"]["body"] if reply else ""

    async def jobs(self, kind: str) -> list[OutboxItem]:
        async with self.sessions() as s:
            query = select(OutboxItem).where(OutboxItem.kind == kind).order_by(OutboxItem.id)
            return list((await s.scalars(query)).all())

    async def out_messages(self) -> list[Message]:
        async with self.sessions() as s:
            query = select(Message).where(Message.direction == "out").order_by(Message.id)
            return list((await s.scalars(query)).all())

    async def run_canned(self, row: OutboxItem) -> None:
        finish = await self.canned.send(Job(row.id, row.kind, row.ordering_key, row.payload, 0))
        if finish is not None:
            await self.db.write(finish)


def seed(tx: Tx) -> int:
    """Anna on WhatsApp (this room), who wrote on the web chat in 2025 and ordered there."""
    clock.set_now(datetime(2025, 3, 1, 9, 0, tzinfo=UTC))
    web = identities.identity_conversation(tx, "webchat", "v1", "Anna", lambda: "c_web")
    old_cart = Cart.empty("EUR").add(PAINT, 1, 10)
    old = commerce.create_order(
        tx,
        conversation_id=web.conversation_id,
        adviser_mxid=ANNA,
        provider="builtin",
        cart=old_cart,
    )
    old.status = "delivered"
    clock.set_now(NOW - timedelta(days=1))
    wa = identities.identity_conversation(tx, "whatsapp", "49151", "Anna Müller", lambda: "c_wa")
    conversations.set_room(tx, wa.conversation_id, ROOM, "WhatsApp · Anna Müller")
    customer = tx.orm.get(ChannelIdentity, web.identity_id)
    assert customer is not None
    tx.orm.execute(
        update(ChannelIdentity)
        .where(ChannelIdentity.id == wa.identity_id)
        .values(customer_id=customer.customer_id)
    )
    cart = Cart.empty("EUR").add(PAINT, 3, 10)
    new = commerce.create_order(
        tx, conversation_id=wa.conversation_id, adviser_mxid=ANNA, provider="builtin", cart=cart
    )
    new.status = "paid"
    commerce.save_cart(tx, wa.conversation_id, Cart.empty("EUR").add(PAINT, 2, 10))
    clock.set_now(NOW)
    return wa.conversation_id


@pytest.fixture
async def hub(db: Database, sessions: Sessions) -> Hub:
    return Hub(db, sessions)


async def test_context_queries_on_a_seeded_database(hub: Hub) -> None:
    cid = await hub.db.write(seed)
    facts = await hub.db.read(context_db.customer_facts, cid)
    assert facts is not None
    assert (facts.channel, facts.customer_name, facts.room_id) == ("whatsapp", "Anna Müller", ROOM)
    assert abs(facts.started_at - (NOW - timedelta(days=1))) < timedelta(seconds=5)
    assert facts.earlier == 1
    assert facts.first_contact is not None
    assert facts.first_contact.date() == datetime(2025, 3, 1).date()
    [cart] = facts.carts
    assert (cart.item_count, cart.total) == (2, Money(2500, "EUR"))
    assert [(o.status, o.total.minor) for o in facts.orders] == [
        ("paid", 3750),
        ("delivered", 1250),
    ]
    assert facts.order_count == 2
    assert await hub.db.read(context_db.customer_facts, cid + 100) is None
    assert await hub.db.read(context_db.customer_of, cid) == ("whatsapp", "Anna Müller")


async def test_the_context_notice_is_posted_and_pinned_once(hub: Hub) -> None:
    cid = await hub.db.write(seed)
    hub.matrix.state[(ROOM, "m.room.pinned_events", "")] = {"pinned": ["$older"]}
    job = Job(41, "advisers.context", f"conv:{cid}", {"conversation_id": cid}, 0)
    await hub.context.post(job)
    [(room, kind, content, txn)] = hub.matrix.sent
    assert (room, kind, txn) == (ROOM, "m.room.message", "hub-job-41")
    assert content["msgtype"] == "m.notice"
    lines = content["body"].split("\n")
    assert lines[0] == "About this customer:"
    assert lines[1].startswith("👤 Anna Müller via WhatsApp, writing since ")
    assert lines[2].startswith("🗂 Earlier conversations: 1, the first on ")
    assert lines[3].startswith("🛒 Open cart: 2 items, 25,00")
    assert lines[4].startswith("📦 Orders: FM-0002 paid (37,50")
    assert "FM-0001 delivered" in lines[4]
    assert "<strong>About this customer</strong>" in content["formatted_body"]
    pins = hub.matrix.state[(ROOM, "m.room.pinned_events", "")]
    assert pins == {"pinned": ["$older", "$ev1"]}
    # A retry after the pin (the homeserver gives the same event for the same transaction).
    hub.matrix.sent.clear()
    hub.matrix._ids = itertools.count(1)
    await hub.context.post(job)
    assert hub.matrix.state[(ROOM, "m.room.pinned_events", "")] == pins


async def test_customer_command_shows_the_context(hub: Hub) -> None:
    cid = await hub.db.write(seed)
    mark, body = await hub.command(cid, "!customer", "$c1")
    assert mark == "✅"
    assert body.startswith("About this customer:\n👤 Anna Müller via WhatsApp")
    mark, body = await hub.command(None, "!customer", "$c2", room="!lobby:shop.example")
    assert (mark, body) == ("⛔", "This command works in a customer's room only.")


async def test_a_canned_reply_goes_to_the_customer_with_its_variables(hub: Hub) -> None:
    cid = await hub.db.write(seed)
    hub.matrix.state[(ROOM, "m.room.member", ANNA)] = {"displayname": "Anna Adviser"}
    mark, body = await hub.command(cid, "!t", "$t0")
    assert mark == "✅"
    assert body.split("\n")[1:] == [
        "• hallo — Hallo {customer_name}, hier ist {adviser_name} von {shop_name}. {oops}",
        "• Pinsel 🖼 — Unser Pinsel, {customer_name}:",
    ]

    mark, body = await hub.command(cid, "!t HALLO", "$t1")
    assert (mark, body) == ("✅", "")
    [queued] = await hub.jobs(ADVISERS_CANNED)
    assert queued.ordering_key == f"conv:{cid}"
    assert await hub.out_messages() == []  # the adviser's name is Matrix's: the job fills it
    await hub.run_canned(queued)
    [sent] = await hub.out_messages()
    text = "Hallo Anna Müller, hier ist Anna Adviser von Farben Müller. {oops}"
    assert (sent.kind, sent.text, sent.sender_mxid) == ("text", text, ANNA)
    [send] = await hub.jobs(CHANNEL_SEND)
    assert send.payload == {"message_id": sent.id}
    room_notes = {j.idempotency_key: j.payload for j in await hub.jobs(MATRIX_SEND)}
    note = room_notes[f"{MATRIX_SEND}/canned:$t1"]
    assert note["room_id"] == ROOM
    assert note["content"]["body"] == f"💬 Canned reply hallo sent: {text}"

    # With a picture, no room member name: the profile's; no profile: the MXID's localpart.
    del hub.matrix.state[(ROOM, "m.room.member", ANNA)]
    hub.matrix.profiles[ANNA] = "Anna vom Profil"
    assert await hub.canned.display_name(ROOM, ANNA) == "Anna vom Profil"
    del hub.matrix.profiles[ANNA]
    assert await hub.command(cid, "!t pinsel", "$t2") == ("✅", "")
    await hub.run_canned((await hub.jobs(ADVISERS_CANNED))[-1])
    picture = (await hub.out_messages())[-1]
    assert (picture.kind, picture.text) == ("image", "Unser Pinsel, Anna Müller:")
    assert picture.media is not None
    assert (picture.media["url"], picture.media["filename"]) == (
        "https://shop.test/p/pin.png",
        "pin.png",
    )
    assert await hub.canned.display_name(ROOM, ANNA) == "anna"


async def test_what_t_refuses(hub: Hub) -> None:
    cid = await hub.db.write(seed)
    mark, body = await hub.command(cid, "!t tschuess", "$r1")
    assert (mark, body) == (
        "⛔",
        "There is no canned reply “tschuess”. Canned replies: hallo, Pinsel",
    )
    mark, body = await hub.command(None, "!t hallo", "$r2", room="!lobby:shop.example")
    assert (mark, body) == ("⛔", "This command works in a customer's room only.")
    assert await hub.jobs(ADVISERS_CANNED) == []
    # Gone from the config by the time the job runs (a restart in between).
    assert (await hub.command(cid, "!t hallo", "$r3"))[0] == "✅"
    hub.canned.replies = []
    await hub.run_canned((await hub.jobs(ADVISERS_CANNED))[-1])
    assert await hub.out_messages() == []
    notes = {j.idempotency_key: j.payload for j in await hub.jobs(MATRIX_SEND)}
    assert notes[f"{MATRIX_SEND}/canned:$r3"]["content"]["body"].startswith("⛔ No canned")


async def test_an_erased_conversation_sends_nothing(hub: Hub) -> None:
    cid = await hub.db.write(seed)
    assert (await hub.command(cid, "!t hallo", "$e1"))[0] == "✅"
    [queued] = await hub.jobs(ADVISERS_CANNED)
    queued.payload = {**queued.payload, "conversation_id": cid + 100}
    await hub.run_canned(queued)
    assert await hub.out_messages() == []


async def test_a_non_assignee_canned_reply_stays_in_the_room_when_others_may_not_answer(
    hub: Hub,
) -> None:
    """routing.others_may_answer: false holds for canned replies as for typed messages."""
    from dataclasses import replace

    cid = await hub.db.write(seed)

    def give_to_bob(tx: Tx) -> None:
        conversation = tx.orm.get(Conversation, cid)
        assert conversation is not None
        conversation.assignee = "@bob:shop.example"

    await hub.db.write(give_to_bob)
    client = cast(MatrixClient, hub.matrix)
    strict = replace(SETTINGS, others_may_answer=False)
    hub.canned = CannedReplies(hub.db, client, hub.shop, strict, REPLIES)
    hub.registry = CommandRegistry()
    for spec in hub.canned.specs() + hub.context.specs():
        hub.registry.register(spec)
    assert await hub.command(cid, "!t hallo", "$n1") == ("✅", "")
    await hub.run_canned((await hub.jobs(ADVISERS_CANNED))[-1])
    assert await hub.out_messages() == []  # nothing for the customer
    notes = {j.idempotency_key: j.payload for j in await hub.jobs(MATRIX_SEND)}
    body = notes[f"{MATRIX_SEND}/canned:$n1"]["content"]["body"]
    assert body.startswith("⛔ ") and "@bob:shop.example" in body
