"""Edits, redactions and private notes end to end: an adviser (matrix-nio) on the real
Synapse edits and redacts what the customer got, on Telegram (the Bot API stand-in) and in
the web chat (the visitor's websocket); notes and thread messages never reach a provider."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import Adviser, Visitor, is_message
from tests.e2e.test_telegram import open_portal, until
from tests.standins.telegram import TelegramStandin

pytestmark = pytest.mark.e2e


@pytest.fixture
def tg(stack: Stack) -> TelegramStandin:
    standin: TelegramStandin = stack.standins["telegram"]
    standin.hub_url = stack.hub_url
    return standin


class RecordingVisitor(Visitor):
    """A visitor whose widget keeps every document the hub pushes, not only messages."""

    def __init__(self, hub_url: str, http: aiohttp.ClientSession) -> None:
        super().__init__(hub_url, http)
        self.docs: list[dict[str, Any]] = []

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                doc = msg.json()
                self.docs.append(doc)
                if doc.get("type") == "message":
                    self.received.append(doc["message"])
                self._got.set()


@pytest.fixture
async def recording_visitor(
    stack: Stack, http: aiohttp.ClientSession
) -> AsyncIterator[RecordingVisitor]:
    v = RecordingVisitor(stack.hub_url, http)
    yield v
    await v.disconnect()


async def until_gone_from_history(visitor: Visitor, message_id: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while message_id in [m["id"] for m in await visitor.history()]:
        assert time.monotonic() < deadline, f"message {message_id} stays in the history"
        await asyncio.sleep(0.05)


async def edit(adviser: Adviser, room_id: str, event_id: str, body: str) -> str:
    content = {
        "msgtype": "m.text",
        "body": f"* {body}",
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
    }
    resp = await adviser.client.room_send(room_id, "m.room.message", content)
    assert getattr(resp, "event_id", None), resp
    return str(resp.event_id)  # type: ignore[union-attr]


async def redact(adviser: Adviser, room_id: str, event_id: str) -> None:
    resp = await adviser.client.room_redact(room_id, event_id)
    assert getattr(resp, "event_id", None), resp


async def test_telegram_edit_and_redaction_and_notes_that_stay(
    stack: Stack, adviser: Adviser, tg: TelegramStandin
) -> None:
    chat = 730001
    room_id = await open_portal(adviser, tg, chat, "Edith", "Edit", "Hallo!")
    first = await adviser.send_text(room_id, "Die Farbe kostet 12 €")
    await until(lambda: tg.sent_to(chat))
    [mid] = [m for (c, m), msg in tg.messages.items() if c == chat and msg["from"] == tg.bot]

    await edit(adviser, room_id, first, "Die Farbe kostet 14 €")
    [call] = await until(lambda: [c for c in tg.calls_of("editMessageText", chat) if c.ok])
    assert call.params == {
        "chat_id": chat,
        "message_id": mid,
        "text": "Die Farbe kostet 14 €",
        "parse_mode": "HTML",
    }
    assert tg.messages[(chat, mid)]["text"] == "Die Farbe kostet 14 €"

    await redact(adviser, room_id, first)
    [deleted] = await until(lambda: [c for c in tg.calls_of("deleteMessage", chat) if c.ok])
    assert deleted.params == {"chat_id": chat, "message_id": mid}
    assert (chat, mid) in tg.deleted

    # A note and a thread reply stay in the room; a message after them still goes out.
    await adviser.send_text(room_id, "// intern: Kundin fragt nach Rabatt")
    await adviser.send_text(
        room_id,
        "Rabatt nur ab 10 Eimern",
        **{"m.relates_to": {"rel_type": "m.thread", "event_id": first, "is_falling_back": True}},
    )
    await adviser.send_text(room_id, "Danach geht es weiter")
    await until(
        lambda: any(c.params.get("text") == "Danach geht es weiter" for c in tg.sent_to(chat))
    )
    texts = [c.params.get("text") for c in tg.calls_of("sendMessage", chat)]
    assert texts == ["Die Farbe kostet 12 €", "Danach geht es weiter"]
    # Telegram could do all of it: no notice about what the customer did not get.
    notices = [
        e["content"]["body"] for e in adviser.room_events(room_id, is_message(msgtype="m.notice"))
    ]
    told = ("cannot", "still sees", "not deleted", "Not delivered", "do not reach")
    assert not [n for n in notices if any(t in n for t in told)], notices


async def test_web_chat_edit_and_redaction_reach_the_visitor(
    stack: Stack, adviser: Adviser, recording_visitor: RecordingVisitor
) -> None:
    visitor = recording_visitor
    await visitor.start(name="Wanda Web")
    await visitor.connect()
    await visitor.say("Guten Tag")
    room_id = await adviser.wait_invite("Webchat · Wanda Web")
    await adviser.join(room_id)
    await adviser.wait_event(room_id, is_message(body="Guten Tag"))

    first = await adviser.send_text(room_id, "Wir haben Blau und Grün")
    shown = await visitor.wait_message(lambda m: m["text"] == "Wir haben Blau und Grün")

    await edit(adviser, room_id, first, "Wir haben Blau, Grün und Gelb")
    edited = await visitor.wait_message(
        lambda d: d.get("type") == "message_edited", among=visitor.docs
    )
    assert edited["message"]["id"] == shown["id"]
    assert edited["message"]["text"] == "Wir haben Blau, Grün und Gelb"

    await redact(adviser, room_id, first)
    deleted = await visitor.wait_message(
        lambda d: d.get("type") == "message_deleted", among=visitor.docs
    )
    assert deleted == {"type": "message_deleted", "id": shown["id"]}
    # The widgets are told before the job's commit marks the row deleted
    # (WebchatChannel.delete_message): the history leaves the message out once it is in.
    await until_gone_from_history(visitor, shown["id"])

    # Notes and thread messages never reach the visitor.
    await adviser.send_text(room_id, "// nur für uns")
    await adviser.send_text(
        room_id, "im Thread", **{"m.relates_to": {"rel_type": "m.thread", "event_id": first}}
    )
    await adviser.send_text(room_id, "Noch etwas?")
    await visitor.wait_message(lambda m: m["text"] == "Noch etwas?")
    await asyncio.sleep(0.2)
    texts = [m["text"] for m in visitor.received]
    assert "// nur für uns" not in texts and "im Thread" not in texts
