"""Advisers' edits, redactions and reactions on their way to the customer's channel, on SQLite
and PostgreSQL, with the providers' loopback stand-ins: the dispatcher (matrix.event) queues
channel.edit / channel.delete / channel.react, the sender's handlers run them the way the
worker does, and the stand-ins record the exact requests. Channels that cannot (WhatsApp's
edits and deletions) get one notice per conversation and kind; what was never relayed (a
note, a customer's message, an unknown event) changes nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.bridges.base import Channel, ChannelDeps, Channels
from hub.bridges.meta.channel import MessengerChannel
from hub.bridges.sending import ChannelSender
from hub.bridges.telegram.channel import TelegramChannel
from hub.bridges.webchat.channel import WebchatChannel
from hub.bridges.whatsapp.channel import WhatsappChannel
from hub.config import MetaPageConfig, TelegramConfig, WebchatConfig
from hub.core.bot import CommandHandler, CommandRunner, help_command
from hub.core.commands import CommandRegistry
from hub.core.ingest import Ingest
from hub.core.media import MediaStore
from hub.core.types import Envelope, InboundMessage, MediaRef, OutboundMessage, Sender
from hub.db import conversations, inbound, outbound, webchat
from hub.db.database import Database, Tx
from hub.db.inbound import InboundPolicy
from hub.db.jobs import room_key
from hub.db.models import Conversation, Message, OutboxItem
from hub.errors import ExternalError
from hub.jobs.job import Job
from hub.jobs.kinds import (
    CHANNEL_DELETE,
    CHANNEL_EDIT,
    CHANNEL_REACT,
    CHANNEL_SEND,
    MATRIX_EVENT,
    MATRIX_SEND,
)
from hub.matrix.client import MatrixClient
from hub.matrix.dispatcher import Dispatcher
from tests.standins.meta import MetaStandin
from tests.standins.telegram import TelegramStandin

Sessions = async_sessionmaker[AsyncSession]
DOMAIN = "shop.example"
ANNA = f"@anna:{DOMAIN}"
BEN = f"@ben:{DOMAIN}"  # an adviser too
CHAT = 515151
PUBLIC = "http://hub.test"
CHANNEL_JOBS = (CHANNEL_SEND, CHANNEL_EDIT, CHANNEL_DELETE, CHANNEL_REACT)


def is_own(mxid: str) -> bool:
    return mxid.startswith("@customer_") or mxid == f"@shopbot:{DOMAIN}"


class FakeSocket:
    """A visitor's open widget: what the channel pushes to it."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    async def send_json(self, doc: dict[str, Any]) -> None:
        self.docs.append(doc)


class Stack:
    """One portal room of one channel: Matrix events through the dispatcher, channel jobs
    through the sender's handlers, in the worker's order."""

    def __init__(
        self,
        db: Database,
        sessions: Sessions,
        channels: Channels,
        sender: ChannelSender,
        room_id: str,
        *,
        others_may_answer: bool = True,
    ) -> None:
        registry: CommandRegistry[CommandHandler] = CommandRegistry()
        registry.register(help_command(registry, "!"))
        self.dispatcher = Dispatcher(
            db,
            is_own,
            registry,
            CommandRunner(registry, [ANNA, BEN]),
            "!",
            channels=channels,
            others_may_answer=others_may_answer,
        )
        self.db, self.sessions, self.sender, self.room_id = db, sessions, sender, room_id
        self.n = 0
        self.done: set[int] = set()
        self.events: dict[str, dict[str, Any]] = {}

    async def portal(self, channel: Channel, external_id: str, remote_id: str) -> tuple[int, str]:
        """The customer's first message, delivered into the room: (conversation, its event)."""
        policy = InboundPolicy(
            channel=channel.kind,
            code=channel.code,
            label=channel.label,
            ghost_prefix="customer_",
            domain=DOMAIN,
            shop_name="Farben Müller",
        )
        customer = Sender(channel.kind, external_id, "Jürgen")
        envelope = Envelope(customer, InboundMessage(remote_id, "text", text="Hallo"))
        [message] = (await self.db.write(inbound.store_events, policy, [envelope])).messages
        event_id = f"$customer-{remote_id}"

        def place(tx: Tx) -> None:
            conversations.set_room(tx, message.conversation_id, self.room_id, "Jürgen")
            conversations.update_message(tx, message.id, matrix_event_id=event_id)

        await self.db.write(place)
        return message.conversation_id, event_id

    async def push(self, sender: str, type_: str, content: dict[str, Any], **top: Any) -> str:
        self.n += 1
        event = {
            "event_id": f"${self.room_id[1:5]}-{self.n}",
            "room_id": self.room_id,
            "type": type_,
            "sender": sender,
            "content": content,
            **top,
        }
        self.events[event["event_id"]] = event
        await self.handle(event)
        return str(event["event_id"])

    async def handle(self, event: dict[str, Any]) -> None:
        """The dispatcher's job for `event` (again, for an event the homeserver resends)."""
        job = Job(self.n, MATRIX_EVENT, room_key(self.room_id), event, 0)
        finish = await self.dispatcher.handle(job)
        if finish is not None:
            await self.db.write(finish)

    async def text(self, sender: str, body: str, **extra: Any) -> str:
        return await self.push(
            sender, "m.room.message", {"msgtype": "m.text", "body": body, **extra}
        )

    async def edit(self, sender: str, target: str, body: str, html: str | None = None) -> str:
        new: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if html is not None:
            new |= {"format": "org.matrix.custom.html", "formatted_body": html}
        content = {
            "msgtype": "m.text",
            "body": f"* {body}",
            "m.new_content": new,
            "m.relates_to": {"rel_type": "m.replace", "event_id": target},
        }
        return await self.push(sender, "m.room.message", content)

    async def redact(self, sender: str, target: str) -> str:
        # Room versions before 11 put `redacts` at the top; 11 in the content: both seen.
        return await self.push(sender, "m.room.redaction", {"redacts": target}, redacts=target)

    async def react(self, sender: str, target: str, key: str = "👍") -> str:
        rel = {"rel_type": "m.annotation", "event_id": target, "key": key}
        return await self.push(sender, "m.reaction", {"m.relates_to": rel})

    async def run_jobs(self) -> list[str]:
        """Run the channel jobs queued so far, oldest first, as the worker would (a
        permanent failure dead-letters the job: its dead handler runs); their kinds."""
        ran = []
        while True:
            async with self.sessions() as s:
                query = (
                    select(OutboxItem)
                    .where(OutboxItem.kind.in_(CHANNEL_JOBS))
                    .order_by(OutboxItem.id)
                )
                pending = [j for j in await s.scalars(query) if j.id not in self.done]
            if not pending:
                return ran
            item = pending[0]
            self.done.add(item.id)
            ran.append(item.kind)
            job = Job(item.id, item.kind, item.ordering_key, dict(item.payload), 0)
            handler = {
                CHANNEL_SEND: self.sender.send,
                CHANNEL_EDIT: self.sender.edit,
                CHANNEL_DELETE: self.sender.delete,
                CHANNEL_REACT: self.sender.react,
            }[item.kind]
            try:
                finish = await handler(job)
            except ExternalError as exc:
                assert exc.permanent, exc
                dead = self.sender.on_dead if item.kind == CHANNEL_SEND else None
                await (dead or self.sender.on_change_dead)(job, exc.human, exc.code)
                continue
            if finish is not None:
                await self.db.write(finish)

    async def jobs(self, kind: str) -> list[OutboxItem]:
        async with self.sessions() as s:
            query = select(OutboxItem).where(OutboxItem.kind == kind).order_by(OutboxItem.id)
            return list(await s.scalars(query))

    async def notices(self) -> list[str]:
        return [
            j.payload["content"]["body"]
            for j in await self.jobs(MATRIX_SEND)
            if j.payload["room_id"] == self.room_id
            and j.payload["content"].get("msgtype") == "m.notice"
        ]

    async def message(self, event_id: str) -> Message:
        async with self.sessions() as s:
            found = await s.scalar(select(Message).where(Message.matrix_event_id == event_id))
            assert found is not None
            return found


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramStandin]:
    standin = TelegramStandin()
    await standin.start()
    standin.private_chat(CHAT, "Jürgen")
    yield standin
    await standin.stop()


def sender_for(db: Database, channels: Channels, store: MediaStore, http: Any) -> ChannelSender:
    # The Matrix client is never called: no adviser's file is fetched here.
    matrix = MatrixClient(http, "http://127.0.0.1:9", "as-token", f"@shopbot:{DOMAIN}")
    return ChannelSender(db, channels, store, matrix, http, 1024 * 1024)


async def test_telegram_edit_delete_and_reactions_are_the_documented_calls(
    db: Database,
    sessions: Sessions,
    telegram: TelegramStandin,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    store = MediaStore(tmp_path / "media")
    channel = TelegramChannel(
        ChannelDeps(db, http, store, PUBLIC),
        TelegramConfig(**(telegram.hub_config() | {"set_webhook_on_start": False})),
    )
    channels = Channels(telegram=channel)
    room = Stack(db, sessions, channels, sender_for(db, channels, store, http), "!tg:shop.example")
    customer_mid = telegram.text_update(CHAT, "Hallo")["message"]["message_id"]
    _, customer_event = await room.portal(channel, str(CHAT), f"{CHAT}:{customer_mid}")

    sent = await room.text(ANNA, "Guten Tag")
    assert await room.run_jobs() == [CHANNEL_SEND]
    [call] = telegram.sent_to(CHAT)
    mid = (await room.message(sent)).remote_id
    assert mid is not None
    [_, message_id] = mid.split(":")

    edit = await room.edit(ANNA, sent, "Guten Tag, Jürgen!", "Guten Tag, <b>Jürgen</b>!")
    assert await room.run_jobs() == [CHANNEL_EDIT]
    [call] = telegram.calls_of("editMessageText")
    assert call.ok and call.params == {
        "chat_id": CHAT,
        "message_id": int(message_id),
        "text": "Guten Tag, <b>Jürgen</b>!",
        "parse_mode": "HTML",
    }
    row = await room.message(sent)
    assert (row.text, row.html) == ("Guten Tag, Jürgen!", "Guten Tag, <b>Jürgen</b>!")
    assert row.data == {"edited": edit}
    # The edit is handled once, however often its event comes.
    await room.handle(room.events[edit])
    assert await room.run_jobs() == []

    await room.react(ANNA, customer_event, "👍\ufe0f")
    reaction = room.n
    assert await room.run_jobs() == [CHANNEL_REACT]
    await room.redact(ANNA, f"${room.room_id[1:5]}-{reaction}")
    assert await room.run_jobs() == [CHANNEL_REACT]
    assert [c.params for c in telegram.calls_of("setMessageReaction")] == [
        {
            "chat_id": CHAT,
            "message_id": customer_mid,
            "reaction": [{"type": "emoji", "emoji": "👍"}],
        },
        {"chat_id": CHAT, "message_id": customer_mid, "reaction": []},
    ]

    await room.redact(ANNA, sent)
    assert await room.run_jobs() == [CHANNEL_DELETE]
    [call] = telegram.calls_of("deleteMessage")
    assert call.ok and call.params == {"chat_id": CHAT, "message_id": int(message_id)}
    assert (await room.message(sent)).status == "deleted"
    # Deleted: later edits and redactions of it have nothing left to change.
    await room.redact(ANNA, sent)
    await room.edit(ANNA, sent, "too late")
    assert await room.run_jobs() == []
    assert await room.notices() == []


async def test_telegram_caption_edit_retries_and_the_48_hour_limit(
    db: Database,
    sessions: Sessions,
    telegram: TelegramStandin,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    store = MediaStore(tmp_path / "media")
    channel = TelegramChannel(
        ChannelDeps(db, http, store, PUBLIC),
        TelegramConfig(**(telegram.hub_config() | {"set_webhook_on_start": False})),
    )
    stored = await store.write(b"\x89PNG\r\n\x1a\n" + b"0" * 64, "wand.png", "image/png")
    media = MediaRef("wand.png", "image/png", stored.size, stored.media_id)
    photo = OutboundMessage(1, 1, str(CHAT), "image", "Ihre Wand", None, media, None, None, None)
    remote_id = await channel.send(photo)
    await channel.edit_message(
        photo.__class__(**{**photo.__dict__, "text": "Ihre Wand, neu"}), remote_id
    )
    [call] = telegram.calls_of("editMessageCaption")
    assert call.params == {
        "chat_id": CHAT,
        "message_id": int(remote_id.split(":")[1]),
        "caption": "Ihre Wand, neu",
        "parse_mode": "HTML",
    }
    # A retried edit meets "message is not modified": the customer sees it already.
    await channel.edit_message(
        photo.__class__(**{**photo.__dict__, "text": "Ihre Wand, neu"}), remote_id
    )
    assert [c.ok for c in telegram.calls_of("editMessageCaption")] == [True, False]

    # After 48 hours Telegram refuses to delete: the room learns the customer still sees it.
    channels = Channels(telegram=channel)
    room = Stack(db, sessions, channels, sender_for(db, channels, store, http), "!tg2:shop.example")
    await room.portal(channel, str(CHAT), f"{CHAT}:1")
    sent = await room.text(ANNA, "Alt")
    await room.run_jobs()
    chat, mid = (await room.message(sent)).remote_id.split(":")  # type: ignore[union-attr]
    telegram.messages[(int(chat), int(mid))]["date"] = int(time.time()) - 49 * 3600
    await room.redact(ANNA, sent)
    assert await room.run_jobs() == [CHANNEL_DELETE]
    assert await room.notices() == [
        "⚠️ The message was not deleted for the customer: Telegram lets a bot delete its "
        "messages only within 48 hours of sending them."
    ]
    assert (await room.message(sent)).status == "sent"


async def test_web_chat_edits_deletions_and_reactions_are_pushed_and_stored(
    db: Database, sessions: Sessions, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = MediaStore(tmp_path / "media")
    matrix = MatrixClient(http, "http://127.0.0.1:9", "as-token", f"@shopbot:{DOMAIN}")
    ingest = Ingest(db, ghost_prefix="customer_", domain=DOMAIN, shop_name="Farben Müller")
    channel = WebchatChannel(
        ChannelDeps(db, http, store, PUBLIC), WebchatConfig(), matrix, ingest, DOMAIN
    )
    channel._names[ANNA] = "Anna"  # her display name, as Matrix would tell it
    channels = Channels(webchat=channel)
    room = Stack(db, sessions, channels, sender_for(db, channels, store, http), "!web:shop.example")
    visitor = "v" + "1" * 31
    _, customer_event = await room.portal(channel, visitor, f"{visitor}:c1")
    widget = FakeSocket()
    channel.sockets[visitor].add(widget)  # type: ignore[arg-type]

    sent = await room.text(ANNA, "Guten Tag")
    await room.run_jobs()
    message_id = (await room.message(sent)).id
    assert [d["type"] for d in widget.docs] == ["message"]

    await room.edit(ANNA, sent, "Guten Tag, Vera!")
    await room.run_jobs()
    pushed = widget.docs[-1]
    assert pushed["type"] == "message_edited"
    assert pushed["message"]["id"] == message_id
    assert pushed["message"]["text"] == "Guten Tag, Vera!"
    assert (await room.message(sent)).text == "Guten Tag, Vera!"

    await room.react(ANNA, customer_event, "👍")
    reaction = f"${room.room_id[1:5]}-{room.n}"
    await room.run_jobs()
    customer_row = await room.message(customer_event)
    assert widget.docs[-1] == {"type": "reaction", "id": customer_row.id, "emoji": "👍"}
    assert customer_row.data == {"reaction": "👍"}
    await room.redact(ANNA, reaction)
    await room.run_jobs()
    assert widget.docs[-1] == {"type": "reaction", "id": customer_row.id, "emoji": ""}
    assert not (await room.message(customer_event)).data

    await room.redact(ANNA, sent)
    await room.run_jobs()
    assert widget.docs[-1] == {"type": "message_deleted", "id": message_id}
    assert (await room.message(sent)).status == "deleted"
    history = await db.read(webchat.history, visitor, 0)
    assert [m.id for m in history if m.direction == "out"] == []
    assert len(widget.docs) == 5  # message, edit, reaction, its removal, deletion
    assert await room.notices() == []


async def test_whatsapp_cannot_edit_or_delete_and_says_so_once_per_conversation(
    db: Database, sessions: Sessions
) -> None:
    channels = Channels(whatsapp=WhatsappChannel)  # type: ignore[arg-type]
    room = Stack(db, sessions, channels, None, "!wa:shop.example")  # type: ignore[arg-type]
    cid, _ = await room.portal(WhatsappChannel, "4915100000010", "wamid.IN1")  # type: ignore[arg-type]
    first = await room.text(ANNA, "Guten Tag")
    second = await room.text(ANNA, "Wie geht's?")

    def sent(tx: Tx) -> None:
        for n, event in enumerate((first, second)):
            found = outbound.relayed_message(tx, event)
            assert found is not None
            outbound.mark_sent(tx, found.id, f"wamid.OUT{n}", None)

    await db.write(sent)
    await room.edit(ANNA, first, "Guten Tag!")
    await room.edit(ANNA, second, "Wie geht es Ihnen?")
    await room.redact(ANNA, first)
    await room.redact(BEN, second)
    assert await room.jobs(CHANNEL_EDIT) == [] and await room.jobs(CHANNEL_DELETE) == []
    assert await room.notices() == [
        "ℹ️ WhatsApp cannot edit a sent message: the customer still sees the first version.",
        "ℹ️ WhatsApp cannot delete a sent message: the customer still sees it.",
    ]
    async with sessions() as s:
        conversation = await s.get(Conversation, cid)
        assert conversation is not None and conversation.meta is not None
        assert conversation.meta["cannot_told"] == ["edit", "delete"]
    # Nothing changed for the customer, so the rows keep what they got.
    assert (await room.message(first)).text == "Guten Tag"


async def test_what_was_never_relayed_changes_nothing(db: Database, sessions: Sessions) -> None:
    channels = Channels(whatsapp=WhatsappChannel)  # type: ignore[arg-type]
    room = Stack(db, sessions, channels, None, "!wa2:shop.example")  # type: ignore[arg-type]
    _, customer_event = await room.portal(WhatsappChannel, "4915100000011", "wamid.IN2")  # type: ignore[arg-type]
    note = await room.text(ANNA, "// the customer sounds unsure")
    thread = await room.text(
        ANNA,
        "ask about the colour",
        **{"m.relates_to": {"rel_type": "m.thread", "event_id": customer_event}},
    )
    await room.redact(ANNA, note)
    await room.edit(ANNA, thread, "ask about the colour and the size")
    await room.redact(ANNA, customer_event)  # the customer's own message
    await room.edit(ANNA, customer_event, "changed?")
    await room.redact(ANNA, "$never-seen")
    sent = await room.text(ANNA, "Guten Tag")
    await room.edit(BEN, sent, "not Ben's to edit")
    await room.redact("@eve:other.example", sent)  # not an adviser
    assert [j.kind for j in await room.jobs(CHANNEL_SEND)] == [CHANNEL_SEND]
    for kind in (CHANNEL_EDIT, CHANNEL_DELETE, CHANNEL_REACT):
        assert await room.jobs(kind) == []
    assert await room.notices() == []


async def test_others_may_not_answer_an_assigned_conversation(
    db: Database, sessions: Sessions
) -> None:
    channels = Channels(whatsapp=WhatsappChannel)  # type: ignore[arg-type]
    room = Stack(
        db,
        sessions,
        channels,
        None,
        "!wa3:shop.example",
        others_may_answer=False,  # type: ignore[arg-type]
    )
    cid, customer_event = await room.portal(WhatsappChannel, "4915100000012", "wamid.IN3")  # type: ignore[arg-type]
    await room.text(BEN, "unassigned: anyone answers")

    def assign(tx: Tx) -> None:
        conversation = conversations.conversation(tx, cid)
        assert conversation is not None
        conversation.assignee = ANNA

    await db.write(assign)
    unassigned = f"${room.room_id[1:5]}-1"
    first = await room.text(BEN, "I'll take this")
    await room.text(BEN, "hello?")
    await room.react(BEN, customer_event)
    anna = await room.text(ANNA, "Anna here")
    assert [j.payload["message_id"] for j in await room.jobs(CHANNEL_SEND)] == [
        (await room.message(unassigned)).id,
        (await room.message(anna)).id,
    ]
    assert await room.jobs(CHANNEL_REACT) == []
    assert await room.notices() == [
        f"{BEN} does not have this conversation ({ANNA} has it): their messages do not "
        "reach the customer."
    ]
    async with sessions() as s:
        conversation = await s.get(Conversation, cid)
        assert conversation is not None and conversation.meta is not None
        assert conversation.meta["not_assignee_told"] == [BEN]
    [notice] = [j for j in await room.jobs(MATRIX_SEND)]
    assert notice.payload["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": first}}


async def test_messenger_reactions_are_sender_actions(
    db: Database, sessions: Sessions, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    meta = MetaStandin("messenger")
    await meta.start()
    try:
        store = MediaStore(tmp_path / "media")
        channel = MessengerChannel(
            ChannelDeps(db, http, store, PUBLIC), MetaPageConfig(**meta.hub_config())
        )
        channels = Channels(messenger=channel)
        room = Stack(
            db, sessions, channels, sender_for(db, channels, store, http), "!fb:shop.example"
        )
        _, customer_event = await room.portal(channel, "psid-1", "m_customer1")
        await room.react(ANNA, customer_event, "❤️")
        reaction = f"${room.room_id[1:5]}-{room.n}"
        await room.redact(ANNA, reaction)
        await room.run_jobs()
        assert meta.actions == [
            {
                "recipient": {"id": "psid-1"},
                "sender_action": "react",
                "payload": {"message_id": "m_customer1", "reaction": "❤️"},
            },
            {
                "recipient": {"id": "psid-1"},
                "sender_action": "unreact",
                "payload": {"message_id": "m_customer1"},
            },
        ]
        # Messenger has no edit or delete for the page's messages: said once, per kind.
        sent = await room.text(ANNA, "Hallo")
        await room.edit(ANNA, sent, "Hallo!")
        await room.edit(ANNA, sent, "Hallo!!")
        assert await room.notices() == [
            "ℹ️ Messenger cannot edit a sent message: the customer still sees the first version."
        ]
    finally:
        await meta.stop()
