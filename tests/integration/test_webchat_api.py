"""The web chat's API (hub.bridges.webchat) on an aiohttp test server with a real database
(SQLite and PostgreSQL): the bot's reply buttons in the widget's JSON, and a tapped button
posted back and stored through the one store path as an "interactive" message, exactly as
the other channels store a tap. Forged, foreign and malformed button ids are refused."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.bridges.base import ChannelDeps, Channels
from hub.bridges.sending import ChannelSender
from hub.bridges.webchat.channel import WebchatChannel
from hub.config import WebchatConfig
from hub.core.ingest import Ingest
from hub.core.media import MediaStore
from hub.db import answers, conversations
from hub.db.database import Database
from hub.db.models import Message, OutboxItem
from hub.jobs.job import Job
from hub.jobs.kinds import CHANNEL_SEND, MATRIX_DELIVER
from hub.matrix.client import MatrixClient

Sessions = async_sessionmaker[AsyncSession]
DOMAIN = "shop.example"
PUBLIC = "http://hub.test"
CONSENT = [
    {"id": "consent.yes", "title": "Ja, gerne"},
    {"id": "consent.no", "title": "Nein, danke", "description": "dropped for the widget"},
]


@dataclass
class Hub:
    client: TestClient[Any, Any]
    db: Database
    sessions: Sessions
    sender: ChannelSender

    async def visitor(self, name: str) -> dict[str, str]:
        """A new visitor's session: the Authorization header (and the visitor id)."""
        resp = await self.client.post("/webchat/api/session", json={"name": name})
        assert resp.status == 200, await resp.text()
        doc = await resp.json()
        return {"Authorization": f"Bearer {doc['token']}", "visitor_id": doc["visitor_id"]}

    async def post(self, who: dict[str, str], **body: Any) -> tuple[int, dict[str, Any]]:
        body.setdefault("client_id", uuid.uuid4().hex)
        headers = {"Authorization": who["Authorization"]}
        resp = await self.client.post("/webchat/api/messages", json=body, headers=headers)
        return resp.status, await resp.json()

    async def history(self, who: dict[str, str]) -> list[dict[str, Any]]:
        headers = {"Authorization": who["Authorization"]}
        resp = await self.client.get("/webchat/api/messages?after=0", headers=headers)
        assert resp.status == 200, await resp.text()
        return list((await resp.json())["messages"])

    async def bot_asks(
        self, who: dict[str, str], buttons: list[dict[str, str]], *, send: bool = True
    ) -> int:
        """The bot's question with reply buttons, queued the way hub.db.answers does it and
        sent through the channel.send job's handler (what the worker runs)."""
        found = await self.db.read(conversations.conversation_of, "webchat", who["visitor_id"])
        assert found is not None
        key = f"test-question:{uuid.uuid4().hex}"

        def ask(tx: Any) -> int:
            message = answers.bot_message(
                tx,
                found.id,
                "webchat",
                "Dürfen wir Fotos Ihrer Wand verwenden?",
                key,
                sender_name="Farben Müller",
                data={"buttons": buttons},
            )
            assert message is not None
            return message.id

        message_id: int = await self.db.write(ask)
        if send:
            job = Job(1, CHANNEL_SEND, f"conversation/{found.id}", {"message_id": message_id}, 0)
            finish = await self.sender.send(job)
            if finish is not None:
                await self.db.write(finish)
        return message_id

    async def messages(self) -> list[Message]:
        async with self.sessions() as s:
            return list(await s.scalars(select(Message).order_by(Message.id)))

    async def jobs(self, kind: str) -> list[OutboxItem]:
        async with self.sessions() as s:
            query = select(OutboxItem).where(OutboxItem.kind == kind).order_by(OutboxItem.id)
            return list(await s.scalars(query))


@pytest.fixture
async def hub(
    aiohttp_client: Any, db: Database, sessions: Sessions, tmp_path: Path
) -> AsyncIterator[Hub]:
    async with aiohttp.ClientSession() as http:
        store = MediaStore(tmp_path / "media")
        deps = ChannelDeps(db, http, store, PUBLIC)
        ingest = Ingest(db, ghost_prefix="customer_", domain=DOMAIN, shop_name="Farben Müller")
        # Never called: the bot's messages carry the shop's name, no adviser's MXID.
        matrix = MatrixClient(http, "http://127.0.0.1:9", "as-token", f"@shopbot:{DOMAIN}")
        channel = WebchatChannel(deps, WebchatConfig(), matrix, ingest, DOMAIN)
        channels = Channels(webchat=channel)
        sender = ChannelSender(db, channels, store, matrix, http, 1024 * 1024)
        app = web.Application()
        channel.add_routes(app)
        yield Hub(await aiohttp_client(app), db, sessions, sender)


async def test_webchat_declares_buttons_reactions_edits_and_deletes() -> None:
    caps = WebchatChannel.capabilities
    assert (caps.buttons, caps.reactions, caps.edits, caps.deletes) == (True, True, True, True)


async def test_webchat_bot_buttons_in_history_and_live_push(hub: Hub) -> None:
    ana = await hub.visitor("Ana")
    status, _ = await hub.post(ana, text="Hallo, ich schicke ein Foto")
    assert status == 201
    ws = await hub.client.ws_connect("/webchat/ws")
    await ws.send_json({"type": "auth", "token": ana["Authorization"][7:], "after": 0})
    assert (await ws.receive_json(timeout=5)) == {"type": "ready"}
    backlog = await ws.receive_json(timeout=5)
    assert backlog["message"]["direction"] == "in"
    assert backlog["message"]["buttons"] == []

    question_id = await hub.bot_asks(ana, CONSENT)

    pushed = await ws.receive_json(timeout=5)
    await ws.close()
    assert pushed["type"] == "message"
    expected = [
        {"id": "consent.yes", "title": "Ja, gerne"},
        {"id": "consent.no", "title": "Nein, danke"},
    ]
    assert pushed["message"]["id"] == question_id
    assert pushed["message"]["buttons"] == expected
    # With buttons the channel has, the titles are not written into the text.
    assert pushed["message"]["text"] == "Dürfen wir Fotos Ihrer Wand verwenden?"
    assert pushed["message"]["sender_name"] == "Farben Müller"

    history = await hub.history(ana)
    assert [(m["direction"], m["buttons"]) for m in history] == [
        ("in", []),
        ("out", expected),
    ]
    assert history[1] == pushed["message"]


async def test_webchat_button_tap_is_stored_as_interactive(hub: Hub) -> None:
    ana = await hub.visitor("Ana")
    await hub.post(ana, text="Hallo")
    question_id = await hub.bot_asks(ana, CONSENT)
    client_id = "tap-consent-yes-1"

    status, doc = await hub.post(
        ana, client_id=client_id, text="Ja, gerne", button_id="consent.yes"
    )
    assert status == 201, doc
    answer = doc["message"]
    assert (answer["direction"], answer["kind"], answer["text"]) == (
        "in",
        "interactive",
        "Ja, gerne",
    )
    assert answer["client_id"] == client_id
    assert answer["buttons"] == []

    stored = (await hub.messages())[-1]
    assert stored.id == answer["id"]
    assert (stored.channel, stored.direction, stored.kind) == ("webchat", "in", "interactive")
    assert stored.text == "Ja, gerne"
    assert stored.data == {"id": "consent.yes", "title": "Ja, gerne"}
    assert stored.remote_id == f"{ana['visitor_id']}:{client_id}"
    assert stored.reply_to_message_id == question_id  # the answer to that question
    # The one store path: its Matrix delivery was queued with it.
    delivers = await hub.jobs(MATRIX_DELIVER)
    assert delivers[-1].payload == {"message_id": stored.id}

    # The widget retrying the same tap (it never saw the answer): no second message.
    status, again = await hub.post(
        ana, client_id=client_id, text="Ja, gerne", button_id="consent.yes"
    )
    assert status == 200
    assert again["message"]["id"] == answer["id"]
    assert len(await hub.messages()) == 3

    # The title stored is the shop's, whatever text the widget echoed.
    status, doc = await hub.post(ana, text="something else", button_id="consent.no")
    assert status == 201
    assert doc["message"]["text"] == "Nein, danke"
    stored = (await hub.messages())[-1]
    assert stored.data == {"id": "consent.no", "title": "Nein, danke"}


async def test_webchat_button_of_the_newest_question_answers(hub: Hub) -> None:
    ana = await hub.visitor("Ana")
    await hub.post(ana, text="Hallo")
    await hub.bot_asks(ana, [{"id": "hub.here", "title": "Ich bin da"}])
    second = await hub.bot_asks(ana, [{"id": "hub.here", "title": "Ich bin noch da"}])
    status, doc = await hub.post(ana, text="Ich bin noch da", button_id="hub.here")
    assert status == 201, doc
    stored = (await hub.messages())[-1]
    assert stored.reply_to_message_id == second
    assert stored.data == {"id": "hub.here", "title": "Ich bin noch da"}


async def test_webchat_forged_or_foreign_button_is_refused(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    ana = await hub.visitor("Ana")
    bo = await hub.visitor("Bo")
    await hub.post(ana, text="Hallo")
    await hub.post(bo, text="Hi")
    await hub.bot_asks(ana, CONSENT)
    await hub.bot_asks(bo, [{"id": "newsletter.yes", "title": "Ja, Newsletter"}])
    # A question not sent (yet): the visitor has never seen its buttons.
    await hub.bot_asks(ana, [{"id": "unsent.yes", "title": "Ja"}], send=False)
    before = len(await hub.messages())

    for who, button_id in [
        (ana, "consent.maybe"),  # no button of any message
        (ana, "newsletter.yes"),  # another visitor's button
        (bo, "consent.yes"),  # and the other way round
        (ana, "unsent.yes"),  # a message the visitor was never shown
        (ana, "Ja, gerne"),  # a title is not an id
    ]:
        caplog.clear()
        status, doc = await hub.post(who, text="Ja", button_id=button_id)
        assert status == 400, (button_id, doc)
        assert doc["error"] == "button_id is not a button of a message of this conversation"
        assert any("button of no message of theirs" in r.getMessage() for r in caplog.records), (
            button_id
        )

    # A visitor with no conversation yet has no buttons at all.
    new = await hub.visitor("Neu")
    status, doc = await hub.post(new, text="Ja", button_id="consent.yes")
    assert status == 400 and "button_id" in doc["error"]

    assert len(await hub.messages()) == before
    assert await hub.history(new) == []


@pytest.mark.parametrize(
    "button_id",
    ["x" * 257, "", 42, ["consent.yes"], {"id": "consent.yes"}, True],
    ids=["too-long", "empty", "number", "list", "object", "bool"],
)
async def test_webchat_malformed_button_id_is_refused(hub: Hub, button_id: object) -> None:
    ana = await hub.visitor("Ana")
    await hub.post(ana, text="Hallo")
    await hub.bot_asks(ana, [{"id": "x" * 257, "title": "Too long an id"}, *CONSENT])
    before = len(await hub.messages())
    status, doc = await hub.post(ana, text="Ja", button_id=button_id)
    assert status == 400
    assert doc["error"] == "button_id must be a string of 1–256 characters"
    assert len(await hub.messages()) == before


async def test_webchat_null_button_id_is_a_plain_text(hub: Hub) -> None:
    ana = await hub.visitor("Ana")
    status, doc = await hub.post(ana, text="Nur Text", button_id=None)
    assert status == 201
    assert (doc["message"]["kind"], doc["message"]["text"]) == ("text", "Nur Text")
