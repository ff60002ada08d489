"""The Telegram client and channel against the loopback Bot API stand-in (no Synapse):
error classification, timeouts, uploads and downloads, splitting, the webhook's checks and
its dedupe through the webhook pipeline and ingest on SQLite."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.bridges.base import ChannelDeps
from hub.bridges.telegram.channel import TelegramChannel
from hub.bridges.telegram.cli import set_webhook
from hub.bridges.telegram.client import TelegramClient
from hub.bridges.webhooks import Webhook
from hub.config import Config, parse_config
from hub.core.ingest import Ingest
from hub.core.types import Button, MediaRef, OutboundMessage
from hub.db.database import Database
from hub.db.models import Message
from hub.errors import ExternalError
from tests.standins.telegram import BLOCKED, Failure, TelegramStandin, rate_limited

CHAT = 424242


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the webhook tests need a database, not both engines


@pytest.fixture
async def standin() -> AsyncIterator[TelegramStandin]:
    s = TelegramStandin()
    await s.start()
    s.private_chat(CHAT, "Jürgen", "Ölfarbe")
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client_for(standin: TelegramStandin, http: aiohttp.ClientSession, **kw: Any) -> TelegramClient:
    return TelegramClient(
        http,
        kw.get("base", standin.base_url),
        kw.get("token", standin.token),
        timeout=kw.get("timeout", 5.0),
        max_download_bytes=kw.get("cap", 1024 * 1024),
    )


# -- client -----------------------------------------------------------------------------


async def test_send_message_as_json(standin: TelegramStandin, http: aiohttp.ClientSession) -> None:
    result = await client_for(standin, http).call(
        "sendMessage", {"chat_id": CHAT, "text": "Grüße 🎨", "parse_mode": "HTML"}
    )
    assert result["chat"]["id"] == CHAT and result["text"] == "Grüße 🎨"
    (call,) = standin.calls_of("sendMessage")
    assert call.http_method == "POST"
    assert call.headers["Content-Type"].startswith("application/json")
    assert call.params["text"] == "Grüße 🎨"


@pytest.mark.parametrize("token", ["7000000001:wrong-token", "not-a-token"])
async def test_wrong_token_is_permanent(
    standin: TelegramStandin, http: aiohttp.ClientSession, token: str
) -> None:
    with pytest.raises(ExternalError) as info:
        await client_for(standin, http, token=token).call("getMe")
    assert info.value.permanent and info.value.code == "unauthorized"
    assert token not in info.value.human


async def test_rate_limit_honours_retry_after(
    standin: TelegramStandin, http: aiohttp.ClientSession
) -> None:
    standin.fail_next(1, rate_limited(3))
    client = client_for(standin, http)
    with pytest.raises(ExternalError) as info:
        await client.call("sendMessage", {"chat_id": CHAT, "text": "x"})
    assert (info.value.permanent, info.value.retry_after, info.value.code) == (
        False,
        3.0,
        "rate_limited",
    )
    await client.call("sendMessage", {"chat_id": CHAT, "text": "x"})  # next one goes through


async def test_blocked_user_is_permanent_with_code(
    standin: TelegramStandin, http: aiohttp.ClientSession
) -> None:
    standin.fail_next(1, BLOCKED)
    with pytest.raises(ExternalError) as info:
        await client_for(standin, http).call("sendMessage", {"chat_id": CHAT, "text": "x"})
    assert info.value.permanent and info.value.code == "blocked"


async def test_bad_request_carries_telegrams_description(
    standin: TelegramStandin, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(ExternalError) as info:
        await client_for(standin, http).call("sendMessage", {"chat_id": 999, "text": "x"})
    assert info.value.permanent and info.value.code == "chat_not_found"
    with pytest.raises(ExternalError) as info:
        await client_for(standin, http).call("noSuchMethod")
    assert info.value.code == "not_found"


async def test_server_error_is_temporary(
    standin: TelegramStandin, http: aiohttp.ClientSession
) -> None:
    standin.fail_next(1, Failure(500, "Internal Server Error"))
    with pytest.raises(ExternalError) as info:
        await client_for(standin, http).call("getMe")
    assert not info.value.permanent


async def test_timeout_is_temporary_and_not_retried(
    standin: TelegramStandin, http: aiohttp.ClientSession
) -> None:
    standin.delay_next(1.5)
    with pytest.raises(ExternalError) as info:
        await client_for(standin, http, timeout=0.3).call(
            "sendMessage", {"chat_id": CHAT, "text": "slow"}
        )
    assert not info.value.permanent and info.value.code == "unreachable"
    # The request may have reached Telegram: a retry belongs to the outbox, not the client.
    assert len(standin.calls_of("sendMessage")) == 1


async def test_connection_refused_is_temporary(http: aiohttp.ClientSession) -> None:
    closed = TelegramStandin()
    await closed.start()
    base = closed.base_url
    await closed.stop()
    with pytest.raises(ExternalError) as info:
        await client_for(closed, http, base=base).call("getMe")
    assert not info.value.permanent


async def test_token_never_logged(
    standin: TelegramStandin, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    standin.fail_next(1, BLOCKED)
    client = client_for(standin, http)
    with pytest.raises(ExternalError):
        await client.call("sendMessage", {"chat_id": CHAT, "text": "x"})
    await client.call("getMe")
    standin.delay_next(1.0)
    with pytest.raises(ExternalError) as info:
        await client_for(standin, http, timeout=0.2).download("photos/none.jpg")
    assert standin.token not in caplog.text
    assert standin.token not in str(info.value) and info.value.__cause__ is None


async def test_multipart_upload(standin: TelegramStandin, http: aiohttp.ClientSession) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    markup = {"inline_keyboard": [[{"text": "Ja", "callback_data": "yes"}]]}
    result = await client_for(standin, http).upload(
        "sendPhoto",
        {"chat_id": CHAT, "caption": "<b>Farbe</b>", "parse_mode": "HTML", "reply_markup": markup},
        "photo",
        png,
        "swatch.png",
        "image/png",
    )
    assert result["photo"][0]["file_size"] == len(png)
    (call,) = standin.calls_of("sendPhoto")
    assert call.headers["Content-Type"].startswith("multipart/form-data")
    assert call.files["photo"] == ("swatch.png", "image/png", png)
    assert call.params["reply_markup"] == markup
    assert call.params["caption"] == "<b>Farbe</b>"


async def test_get_file_and_download(standin: TelegramStandin, http: aiohttp.ClientSession) -> None:
    data = b"\xff\xd8\xff" + b"j" * 5000
    file_id = standin.add_file(data, "image/jpeg", "photos/file_7.jpg")
    client = client_for(standin, http)
    info = await client.call("getFile", {"file_id": file_id})
    assert info["file_path"] == "photos/file_7.jpg"
    assert await client.download(info["file_path"]) == (data, "image/jpeg")
    with pytest.raises(ExternalError) as too_big:
        await client_for(standin, http, cap=1000).download(info["file_path"])
    assert too_big.value.code == "file_too_big" and too_big.value.permanent
    with pytest.raises(ExternalError) as missing:
        await client.call("getFile", {"file_id": "nope"})
    assert missing.value.code == "bad_file"


# -- channel (its collaborators reduced to what it uses) -------------------------------------


class FakeMedia:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    async def read(self, media_id: str) -> bytes:
        return self.files[media_id]


def make_config(
    standin: TelegramStandin, tmp_path: Path, public_url: str = "http://127.0.0.1:29330", **tg: Any
) -> Config:
    return parse_config(
        {
            "data_dir": str(tmp_path),
            "homeserver": {"url": "http://127.0.0.1:9", "domain": "shop.example"},
            "appservice": {"as_token": "a" * 32, "hs_token": "b" * 32},
            "http": {"public_url": public_url},
            "channels": {"telegram": standin.hub_config() | tg},
        }
    )


@pytest.fixture
def channel(
    standin: TelegramStandin, http: aiohttp.ClientSession, tmp_path: Path, db: Database
) -> TelegramChannel:
    config = make_config(standin, tmp_path)
    deps = ChannelDeps(db, http, FakeMedia(), config.http.public_base)  # type: ignore[arg-type]
    return TelegramChannel(deps, config.channels.telegram)


def outbound(n: int = 1, **kw: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "message_id": n,
        "conversation_id": 1,
        "external_id": str(CHAT),
        "kind": "text",
        "text": None,
        "html": None,
        "media": None,
        "reply_to_remote_id": None,
        "sender_mxid": "@anna:shop.example",
        "sender_name": "Anna",
    }
    return OutboundMessage(**(values | kw))


async def test_send_escapes_plain_text(channel: TelegramChannel, standin: TelegramStandin) -> None:
    remote = await channel.send(outbound(text="1 < 2 & 3 > 2 — Grüße 🎨 مرحبا"))
    (call,) = standin.sent_to(CHAT)
    assert call.params["text"] == "1 &lt; 2 &amp; 3 &gt; 2 — Grüße 🎨 مرحبا"
    assert call.params["parse_mode"] == "HTML"
    assert remote == f"{CHAT}:{standin.messages[(CHAT, 1001)]['message_id']}"


async def test_send_formatted_reply_with_buttons(
    channel: TelegramChannel, standin: TelegramStandin
) -> None:
    await channel.send(outbound(text="x", html="<b>Hi</b>"))
    await channel.send(
        outbound(
            2,
            text="Which colour?",
            html="<p>Which <i>colour</i>?</p>",
            reply_to_remote_id=f"{CHAT}:1001",
            buttons=(Button("red", "Rot"), Button("blue", "Blau")),
        )
    )
    call = standin.sent_to(CHAT)[1]
    assert call.params["text"] == "Which <i>colour</i>?"
    assert call.params["reply_parameters"] == {
        "message_id": 1001,
        "allow_sending_without_reply": True,
    }
    assert call.params["reply_markup"]["inline_keyboard"] == [
        [{"text": "Rot", "callback_data": "red"}],
        [{"text": "Blau", "callback_data": "blue"}],
    ]


async def test_long_text_split_reply_first_buttons_last(
    channel: TelegramChannel, standin: TelegramStandin
) -> None:
    text = ("Farbe " * 1500).strip()
    await channel.send(outbound(text=text, buttons=(Button("ok", "OK"),)))
    first = await channel.send(
        outbound(2, text=text, reply_to_remote_id=f"{CHAT}:1001", buttons=(Button("ok", "OK"),))
    )
    calls = standin.sent_to(CHAT)[3:]
    assert len(calls) == 3
    assert "reply_parameters" in calls[0].params
    assert all("reply_parameters" not in c.params for c in calls[1:])
    assert "reply_markup" in calls[2].params
    assert all("reply_markup" not in c.params for c in calls[:2])
    assert " ".join(c.params["text"] for c in calls) == text
    assert first == f"{CHAT}:1004"


async def test_failed_part_is_retried_without_resending_earlier_parts(
    channel: TelegramChannel, standin: TelegramStandin
) -> None:
    text = ("Farbe " * 1500).strip()
    # Flood control hits the second part; the outbox retries the whole message later.
    standin.fail_next(1, rate_limited(1), {"sendMessage"}, after=1)
    with pytest.raises(ExternalError) as info:
        await channel.send(outbound(10, text=text))
    assert info.value.retry_after == 1.0
    assert len(standin.sent_to(CHAT)) == 1
    first = await channel.send(outbound(10, text=text))
    texts = [c.params["text"] for c in standin.sent_to(CHAT)]
    assert " ".join(texts) == text  # every part exactly once
    assert len(texts) == 3
    assert first == f"{CHAT}:1001"


async def test_photo_with_caption_and_long_caption(
    channel: TelegramChannel, standin: TelegramStandin
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"p" * 100
    channel.deps.media.files["m1"] = png  # type: ignore[attr-defined]
    media = MediaRef("swatch.png", "image/png", len(png), media_id="m1")
    await channel.send(outbound(kind="image", text="Ocker", media=media))
    await channel.send(outbound(2, kind="image", text="lang " * 300, media=media))
    calls = standin.sent_to(CHAT)
    assert [c.method for c in calls] == ["sendPhoto", "sendPhoto", "sendMessage"]
    assert calls[0].files["photo"] == ("swatch.png", "image/png", png)
    assert calls[0].params["caption"] == "Ocker"
    assert "caption" not in calls[1].params  # too long for a caption: sent as text after
    assert calls[2].params["text"] == ("lang " * 300).strip()


async def test_voice_and_document_methods(
    channel: TelegramChannel, standin: TelegramStandin
) -> None:
    channel.deps.media.files["v"] = b"OggS voice"  # type: ignore[attr-defined]
    channel.deps.media.files["d"] = b"%PDF-1.4"  # type: ignore[attr-defined]
    await channel.send(outbound(kind="audio", media=MediaRef("v.ogg", "audio/ogg", 10, "v")))
    await channel.send(
        outbound(2, kind="file", media=MediaRef("offer.pdf", "application/pdf", 8, "d"))
    )
    assert [c.method for c in standin.sent_to(CHAT)] == ["sendVoice", "sendDocument"]


async def test_refused_formatting_falls_back_to_plain_text(
    channel: TelegramChannel, standin: TelegramStandin
) -> None:
    standin.fail_next(1, Failure(400, "Bad Request: can't parse entities: odd"), {"sendMessage"})
    await channel.send(outbound(text="a & b", html="<b>a &amp; b</b>"))
    (call,) = standin.sent_to(CHAT)
    assert call.params["text"] == "a & b" and "parse_mode" not in call.params


async def test_blocked_send_raises_blocked(
    channel: TelegramChannel, standin: TelegramStandin
) -> None:
    standin.blocked.add(CHAT)
    with pytest.raises(ExternalError) as info:
        await channel.send(outbound(text="hello"))
    assert info.value.code == "blocked" and info.value.permanent


async def test_reactions(channel: TelegramChannel, standin: TelegramStandin) -> None:
    await channel.send(outbound(text="hello"))
    await channel.send_reaction(str(CHAT), f"{CHAT}:1001", "👍")
    await channel.send_reaction(str(CHAT), f"{CHAT}:1001", "")
    await channel.send_reaction(str(CHAT), "cb:77", "👍")  # not a message: nothing sent
    calls = standin.calls_of("setMessageReaction")
    assert [c.params["reaction"] for c in calls] == [[{"type": "emoji", "emoji": "👍"}], []]
    with pytest.raises(ExternalError) as info:
        await channel.send_reaction(str(CHAT), f"{CHAT}:1001", "🦜")
    assert info.value.code == "reaction_invalid"


async def test_fetch_media(channel: TelegramChannel, standin: TelegramStandin) -> None:
    data = b"OggS" + b"v" * 300
    file_id = standin.add_file(data, "audio/ogg", "voice/file_1.oga")
    ref = MediaRef("voice.ogg", "audio/ogg", len(data), remote_id=file_id)
    assert await channel.fetch_media(ref) == (data, "audio/ogg")


async def test_set_webhook(channel: TelegramChannel, standin: TelegramStandin) -> None:
    url = await channel.set_webhook()
    assert url == "http://127.0.0.1:29330/webhooks/telegram"
    assert standin.webhook == {
        "url": url,
        "secret_token": standin.secret,
        "allowed_updates": [
            "message",
            "edited_message",
            "callback_query",
            "message_reaction",
            "my_chat_member",
        ],
    }


# -- webhook -----------------------------------------------------------------------------


@pytest.fixture
async def webhook(channel: TelegramChannel, db: Database) -> AsyncIterator[str]:
    app = web.Application()
    ingest = Ingest(db, ghost_prefix="customer_", domain="shop.example", shop_name="Shop")
    Webhook(channel, ingest, 1_048_576).add_routes(app)
    async with TestServer(app) as server:
        yield str(server.make_url("/webhooks/telegram"))


async def stored(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(Message))).scalar_one())


async def test_webhook_secret_checked_before_anything(
    webhook: str, standin: TelegramStandin, sessions: async_sessionmaker[AsyncSession]
) -> None:
    update = standin.text_update(CHAT, "hello")
    assert await standin.send_update(update, secret=None, url=webhook) == 401
    assert await standin.send_update(update, secret="wrong-secret", url=webhook) == 403
    assert await standin.post_raw(b"{not json", url=webhook) == 400
    assert await stored(sessions) == 0


async def test_webhook_stores_once_when_redelivered(
    webhook: str,
    channel: TelegramChannel,
    standin: TelegramStandin,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    update = standin.text_update(CHAT, "Grüße 🎨")
    assert await standin.send_update(update, url=webhook) == 200
    assert await standin.send_update(update, url=webhook) == 200
    async with sessions() as s:
        rows = (await s.execute(select(Message))).scalars().all()
    assert [(m.remote_id, m.text, m.channel) for m in rows] == [
        (f"{CHAT}:1001", "Grüße 🎨", "telegram")
    ]


async def test_webhook_answers_callback_queries(
    webhook: str,
    channel: TelegramChannel,
    standin: TelegramStandin,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await channel.send(outbound(text="Which?", buttons=(Button("red", "Rot"),)))
    update = standin.callback_update(CHAT, 1001, "red")
    assert await standin.send_update(update, url=webhook) == 200
    for _ in range(50):
        if standin.calls_of("answerCallbackQuery"):
            break
        await __import__("asyncio").sleep(0.02)
    (answer,) = standin.calls_of("answerCallbackQuery")
    assert answer.ok and answer.params["callback_query_id"] == update["callback_query"]["id"]
    async with sessions() as s:
        row = (await s.execute(select(Message))).scalars().one()
    assert (row.kind, row.text, row.data) == ("interactive", "Rot", {"id": "red", "title": "Rot"})


async def test_group_update_is_acknowledged_and_not_stored(
    webhook: str, standin: TelegramStandin, sessions: async_sessionmaker[AsyncSession]
) -> None:
    update = {
        "update_id": 1,
        "message": {
            "message_id": 5,
            "date": 1,
            "chat": {"id": -100, "type": "group", "title": "G"},
            "text": "hi",
        },
    }
    assert await standin.send_update(update, url=webhook) == 200
    assert await stored(sessions) == 0


# -- `hub telegram set-webhook` ---------------------------------------------------------------


async def test_cli_set_webhook(standin: TelegramStandin, tmp_path: Path) -> None:
    line = await set_webhook(make_config(standin, tmp_path))
    assert line.startswith("Telegram will deliver the bot's updates to ")
    assert "http://127.0.0.1:29330/webhooks/telegram" in line
    assert standin.webhook is not None
    assert standin.webhook["secret_token"] == standin.secret
    assert [c.method for c in standin.calls] == ["setWebhook", "getWebhookInfo"]
    assert standin.token not in line


@pytest.mark.parametrize(
    "public_url", ["http://shop.example", "https://shop.example:8080", "http://127.0.0.1:29330"]
)
async def test_cli_refuses_urls_telegram_cannot_call(
    standin: TelegramStandin, tmp_path: Path, public_url: str
) -> None:
    config = make_config(
        standin, tmp_path, public_url=public_url, api_base_url="https://api.telegram.org"
    )
    with pytest.raises(ExternalError) as info:
        await set_webhook(config)
    assert "http.public_url" in info.value.human and info.value.permanent


async def test_cli_needs_the_channel_enabled(standin: TelegramStandin, tmp_path: Path) -> None:
    with pytest.raises(ExternalError) as info:
        await set_webhook(make_config(standin, tmp_path, enabled=False))
    assert "not enabled" in info.value.human
    assert standin.calls == []


async def test_cli_reports_a_refused_token(standin: TelegramStandin, tmp_path: Path) -> None:
    with pytest.raises(ExternalError) as info:
        await set_webhook(make_config(standin, tmp_path, bot_token="7000000001:revoked"))
    assert info.value.code == "unauthorized"
