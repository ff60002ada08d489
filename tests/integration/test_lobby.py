"""The lobby's listing and the advisers' space on SQLite and PostgreSQL, against a recording
stand-in of the homeserver: the listing posted once and then edited (never when its text
is unchanged), who counts as waiting, what a new portal queues, the space made once with
every portal a child. The same on a real Synapse: tests/e2e/test_lobby_space.py."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.advisers.space import AdvisersSettings, AdvisersSpace, LobbyListing
from hub.core import clock
from hub.core.types import Envelope, InboundMessage, InboundReaction, Sender
from hub.db import inbound
from hub.db import lobby as lobby_db
from hub.db.database import Database
from hub.db.inbound import InboundPolicy
from hub.db.models import Conversation, OutboxItem
from hub.jobs.job import Job
from hub.jobs.kinds import ADVISERS_CONTEXT, ADVISERS_LOBBY, ADVISERS_SPACE
from hub.matrix.client import MatrixClient

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
LOBBY = "!lobby:shop.example"
ANNA = "@anna:shop.example"
SETTINGS = AdvisersSettings(
    domain="shop.example",
    bot_mxid="@shopbot:shop.example",
    alias_prefix="shop_",
    advisers=(ANNA,),
    shop_name="Farben Müller",
    locale="en_US",
    timezone="Europe/Berlin",
    order_prefix="",
    command_prefix="!",
    lobby_room=LOBBY,
    space=True,
    channel_labels={"whatsapp": "WhatsApp", "webchat": "Webchat"},
)


class FakeMatrix:
    """What the handlers call on the homeserver, recorded."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any], str]] = []
        self.state: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.state_puts = 0
        self.created: list[dict[str, Any]] = []
        self.invited: list[tuple[str, str]] = []
        self.profiles: dict[str, str] = {}
        self._ids = itertools.count(1)

    async def send_event(
        self,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        txn_id: str,
        *,
        as_user: str | None = None,
    ) -> str:
        self.sent.append((room_id, event_type, content, txn_id))
        return f"$ev{next(self._ids)}"

    async def put_state(
        self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
    ) -> str:
        self.state[(room_id, event_type, state_key)] = content
        self.state_puts += 1
        return f"$st{next(self._ids)}"

    async def room_state(
        self, room_id: str, event_type: str, state_key: str = ""
    ) -> dict[str, Any] | None:
        return self.state.get((room_id, event_type, state_key))

    async def request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        assert (method, path) == ("POST", "/_matrix/client/v3/createRoom")
        self.created.append(body)
        return {"room_id": f"!space{len(self.created)}:shop.example"}

    async def invite(self, room_id: str, mxid: str) -> None:
        self.invited.append((room_id, mxid))

    async def resolve_alias(self, alias: str) -> str | None:
        return None

    async def display_name(self, mxid: str) -> str | None:
        return self.profiles.get(mxid)


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    clock.set_now(NOW)
    yield
    clock.reset()


def policy(channel: str) -> InboundPolicy:
    label = SETTINGS.channel_labels[channel]
    return InboundPolicy(channel, channel[:2], label, "customer_", "shop.example", "Farben Müller")


async def customer_writes(
    db: Database, who: Sender, text: str, at: datetime, n: str, room: str | None = None
) -> int:
    """The customer's message at `at`; its conversation's id (with `room` recorded)."""
    clock.set_now(at)
    try:
        msg = InboundMessage(n, "text", text=text)
        result = await db.write(inbound.store_events, policy(who.channel), [Envelope(who, msg)])
    finally:
        clock.set_now(NOW)
    cid = result.messages[0].conversation_id
    if room:
        await db.write(lobby_db.portal_recorded, cid, room, who.display_name or "", space=False)
    return cid


async def set_conversation(db: Database, cid: int, **values: Any) -> None:
    def change(tx: Any) -> None:
        tx.orm.execute(update(Conversation).where(Conversation.id == cid).values(**values))

    await db.write(change)


async def jobs(sessions: Sessions, kind: str) -> list[OutboxItem]:
    async with sessions() as s:
        query = select(OutboxItem).where(OutboxItem.kind == kind).order_by(OutboxItem.id)
        return list((await s.scalars(query)).all())


def as_job(row: OutboxItem) -> Job:
    return Job(row.id, row.kind, row.ordering_key, row.payload, 0)


async def run_listing(db: Database, listing: LobbyListing, n: int) -> None:
    finish = await listing.refresh(Job(n, ADVISERS_LOBBY, "lobby", {}, 0))
    if finish is not None:
        await db.write(finish)


def listing(db: Database, matrix: FakeMatrix, **changes: Any) -> LobbyListing:
    return LobbyListing(db, cast(MatrixClient, matrix), replace(SETTINGS, **changes))


async def test_listing_is_posted_once_then_edited_and_never_for_the_same_text(
    db: Database,
) -> None:
    matrix = FakeMatrix()
    lobby = listing(db, matrix)
    await run_listing(db, lobby, 1)
    [(room, kind, first, txn)] = matrix.sent
    assert (room, kind, txn) == (LOBBY, "m.room.message", "hub-job-1")
    assert first["msgtype"] == "m.notice"
    assert first["body"] == "✅ Nobody is waiting for an adviser."
    assert first["formatted_body"] == "<p>✅ Nobody is waiting for an adviser.</p>"

    await run_listing(db, lobby, 2)  # nothing changed: nothing sent
    assert len(matrix.sent) == 1

    anna = Sender("whatsapp", "4915112345678", "Anna Müller")
    cid = await customer_writes(
        db, anna, "Ist Kobaltblau lieferbar?", NOW - timedelta(minutes=7), "m1", "!a:shop.example"
    )
    await run_listing(db, lobby, 3)
    assert len(matrix.sent) == 2
    _, _, edit, txn = matrix.sent[1]
    assert txn == "hub-job-3"
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$ev1"}
    new = edit["m.new_content"]
    assert new["body"] == (
        "📋 1 conversation waits for an adviser:\n"
        "• WhatsApp · Anna Müller — waiting: 7 minutes — „Ist Kobaltblau lieferbar?“"
        " — https://matrix.to/#/!a:shop.example"
    )
    assert edit["body"] == "* " + new["body"]
    assert "m.relates_to" not in new

    await run_listing(db, lobby, 4)
    assert len(matrix.sent) == 2  # the same minute: the same words

    clock.set_now(NOW + timedelta(minutes=1))
    await run_listing(db, lobby, 5)
    assert len(matrix.sent) == 3  # the waiting time moved on
    assert "waiting: 8 minutes" in matrix.sent[2][2]["m.new_content"]["body"]
    # Every edit replaces the first message, never an edit.
    assert matrix.sent[2][2]["m.relates_to"]["event_id"] == "$ev1"

    await set_conversation(db, cid, assignee=ANNA, assigned_at=NOW)
    await run_listing(db, lobby, 6)
    assert matrix.sent[3][2]["m.new_content"]["body"] == "✅ Nobody is waiting for an adviser."

    # Another lobby room in the config: a listing of its own there.
    other = listing(db, matrix, lobby_room="!other:shop.example")
    await run_listing(db, other, 7)
    room, _, content, _ = matrix.sent[4]
    assert room == "!other:shop.example" and "m.relates_to" not in content


async def test_without_a_lobby_room_nothing_is_sent(db: Database) -> None:
    matrix = FakeMatrix()
    await run_listing(db, listing(db, matrix, lobby_room=None), 1)
    assert matrix.sent == []


async def test_who_waits_and_in_which_order(db: Database) -> None:
    ago = lambda minutes: NOW - timedelta(minutes=minutes)  # noqa: E731
    late = await customer_writes(db, Sender("webchat", "v1", "Zoë 山田"), "Hallo", ago(10), "a")
    early = await customer_writes(
        db, Sender("whatsapp", "49151", None), "Guten Tag", ago(30), "b", "!b:shop.example"
    )
    await customer_writes(db, Sender("whatsapp", "49151", None), "noch da?", ago(5), "b2")
    answered = await customer_writes(db, Sender("whatsapp", "49152", "Bo"), "Frage", ago(60), "c")
    await set_conversation(db, answered, last_adviser_reply_at=ago(50))
    # A reaction to the adviser's answer is nothing to answer.
    reaction = InboundReaction("c-r", "c", "👍")
    await db.write(
        inbound.store_events,
        policy("whatsapp"),
        [Envelope(Sender("whatsapp", "49152", "Bo"), reaction)],
    )
    replied_then_asked = await customer_writes(
        db, Sender("whatsapp", "49153", "Cy"), "erste", ago(90), "d"
    )
    await set_conversation(db, replied_then_asked, last_adviser_reply_at=ago(80))
    await customer_writes(db, Sender("whatsapp", "49153", "Cy"), "zweite", ago(20), "d2")
    assigned = await customer_writes(db, Sender("whatsapp", "49154", "Di"), "x", ago(99), "e")
    await set_conversation(db, assigned, assignee=ANNA)
    closed = await customer_writes(db, Sender("whatsapp", "49155", "Ed"), "y", ago(99), "f")
    await set_conversation(db, closed, status="closed", closed_at=NOW)

    waiting, total = await db.read(lobby_db.waiting_conversations, 30, SETTINGS.channel_labels)
    assert total == 4
    assert [(w.conversation_id, w.first_text) for w in waiting] == [
        (early, "Guten Tag"),
        (replied_then_asked, "zweite"),
        (late, "Hallo"),
        (answered, None),
    ]
    assert waiting[0].since is not None
    assert abs(waiting[0].since - ago(30)) < timedelta(seconds=5)  # the clock runs on
    assert waiting[0].room_id == "!b:shop.example"
    assert (waiting[2].channel_label, waiting[2].customer_name) == ("Webchat", "Zoë 山田")
    capped, total = await db.read(lobby_db.waiting_conversations, 2, SETTINGS.channel_labels)
    assert [w.conversation_id for w in capped] == [early, replied_then_asked] and total == 4


async def test_a_new_portal_queues_its_context_its_space_link_and_a_listing(
    db: Database, sessions: Sessions
) -> None:
    cid = await customer_writes(db, Sender("whatsapp", "49151", "Ann"), "Hallo", NOW, "m")
    before = len(await jobs(sessions, ADVISERS_LOBBY))
    await db.write(lobby_db.portal_recorded, cid, "!p:shop.example", "WhatsApp · Ann", space=True)
    async with sessions() as s:
        conversation = await s.get(Conversation, cid)
        assert conversation is not None and conversation.room_id == "!p:shop.example"
    [context] = await jobs(sessions, ADVISERS_CONTEXT)
    assert (context.ordering_key, context.payload) == (f"conv:{cid}", {"conversation_id": cid})
    [space] = await jobs(sessions, ADVISERS_SPACE)
    assert (space.ordering_key, space.payload) == ("space", {"room_id": "!p:shop.example"})
    assert len(await jobs(sessions, ADVISERS_LOBBY)) == before + 1
    # routing.space off: no link to the space.
    other = await customer_writes(db, Sender("whatsapp", "49152", "Bo"), "Hallo", NOW, "n")
    await db.write(lobby_db.portal_recorded, other, "!q:shop.example", "Bo", space=False)
    assert len(await jobs(sessions, ADVISERS_SPACE)) == 1
    assert len(await jobs(sessions, ADVISERS_CONTEXT)) == 2


async def test_the_space_is_made_once_and_every_portal_becomes_its_child(
    db: Database, sessions: Sessions
) -> None:
    old = await customer_writes(
        db, Sender("whatsapp", "1", "Alt"), "a", NOW, "a", "!old:shop.example"
    )
    assert old
    matrix = FakeMatrix()
    space = AdvisersSpace(db, cast(MatrixClient, matrix), SETTINGS)
    await db.write(lobby_db.at_start)
    [sync] = await jobs(sessions, ADVISERS_SPACE)
    await space.on_job(as_job(sync))

    [body] = matrix.created
    assert body["creation_content"]["type"] == "m.space"
    assert body["name"] == "Farben Müller · Customers"
    assert body["invite"] == [ANNA]
    assert body["room_alias_name"] == "shop_space"
    sid = "!space1:shop.example"
    assert matrix.state[(sid, "m.space.child", "!old:shop.example")] == {"via": ["shop.example"]}
    assert matrix.state[("!old:shop.example", "m.space.parent", sid)] == {
        "via": ["shop.example"],
        "canonical": True,
    }
    state = await db.read(lobby_db.get_state, "space")
    assert state == {"room_id": sid, "invited": [ANNA], "synced": True}

    # The next start: no second space, the portals are not added again.
    puts = matrix.state_puts
    await db.write(lobby_db.at_start)
    await space.on_job(as_job((await jobs(sessions, ADVISERS_SPACE))[-1]))
    assert len(matrix.created) == 1 and matrix.state_puts == puts

    # A new portal: its own job; run twice (a retry) it changes nothing more.
    new = await customer_writes(db, Sender("whatsapp", "2", "Neu"), "b", NOW, "b")
    await db.write(lobby_db.portal_recorded, new, "!x:shop.example", "x", space=True)
    child = (await jobs(sessions, ADVISERS_SPACE))[-1]
    await space.on_job(as_job(child))
    await space.on_job(as_job(child))
    assert (sid, "m.space.child", "!x:shop.example") in matrix.state
    assert len(matrix.created) == 1

    # An adviser added to the config is invited once.
    bob = "@bob:shop.example"
    grown = AdvisersSpace(db, cast(MatrixClient, matrix), replace(SETTINGS, advisers=(ANNA, bob)))
    await grown.on_job(as_job(child))
    await grown.on_job(as_job(child))
    assert matrix.invited == [(sid, bob)]

    # Switched off: nothing is made, and the portals are added again once it is back on.
    off = AdvisersSpace(db, cast(MatrixClient, matrix), replace(SETTINGS, space=False))
    await off.on_job(as_job(sync))
    assert (await db.read(lobby_db.get_state, "space") or {}).get("synced") is False
    assert len(matrix.created) == 1
