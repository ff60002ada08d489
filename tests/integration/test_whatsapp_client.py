"""The WhatsApp client and channel sending against the loopback Graph API stand-in (no
Synapse): request shapes, error classification, retries, timeouts, media both ways, the
24-hour window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hub.bridges.base import ChannelDeps
from hub.bridges.whatsapp import outbound as wa_out
from hub.bridges.whatsapp.channel import WhatsappChannel
from hub.bridges.whatsapp.client import WhatsappClient
from hub.config import Config, WhatsappConfig, parse_config
from hub.core.types import Button, MediaRef, OutboundMessage
from hub.devserver.synapse import free_port
from hub.errors import ExternalError
from tests.standins.whatsapp import WhatsappStandin

CUSTOMER = "4915112345678"


def hub_config(section: dict[str, Any]) -> Config:
    return parse_config(
        {
            "homeserver": {"url": "http://127.0.0.1:1", "domain": "shop.example"},
            "appservice": {"as_token": "a" * 32, "hs_token": "b" * 32},
            "channels": {"whatsapp": section},
        }
    )


@pytest.fixture
async def standin() -> AsyncIterator[WhatsappStandin]:
    s = WhatsappStandin()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def config(standin: WhatsappStandin) -> WhatsappConfig:
    return hub_config(standin.hub_config()).channels.whatsapp


@pytest.fixture
def client(http: aiohttp.ClientSession, config: WhatsappConfig) -> WhatsappClient:
    return WhatsappClient(http, config)


class FakeMedia:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    async def read(self, media_id: str) -> bytes:
        return self.files[media_id]


@pytest.fixture
def channel(standin: WhatsappStandin, http: aiohttp.ClientSession) -> WhatsappChannel:
    config = hub_config(standin.hub_config())
    deps = ChannelDeps(None, http, FakeMedia(), config.http.public_base)  # type: ignore[arg-type]
    return WhatsappChannel(deps, config.channels.whatsapp, "!")


def message(**kw: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "message_id": 1,
        "conversation_id": 1,
        "external_id": CUSTOMER,
        "kind": "text",
        "text": "Hallo",
        "html": None,
        "media": None,
        "reply_to_remote_id": None,
        "sender_mxid": "@anna:shop.example",
        "sender_name": "Anna",
        "last_inbound_at": datetime.now(UTC) - timedelta(hours=1),
    }
    return OutboundMessage(**(values | kw))


async def test_send_text_uses_bearer_token_and_documented_body(
    client: WhatsappClient, standin: WhatsappStandin
) -> None:
    wamid = await client.send_message(wa_out.text_payload(CUSTOMER, "Grüße 👋 مرحبا"))
    [rec] = standin.sent()
    assert rec.path == "/v21.0/106540352242922/messages"
    assert rec.headers["Authorization"] == f"Bearer {standin.access_token}"
    assert rec.json["text"]["body"] == "Grüße 👋 مرحبا"
    assert wamid == rec.response["messages"][0]["id"]
    assert wamid.startswith("wamid.")


async def test_rate_limit_is_temporary_with_retry_after(
    client: WhatsappClient, standin: WhatsappStandin
) -> None:
    standin.fail_next(1, code=130429, http_status=429, retry_after=3)
    with pytest.raises(ExternalError) as caught:
        await client.send_message(wa_out.text_payload(CUSTOMER, "x"))
    assert caught.value.permanent is False
    assert caught.value.retry_after == 3
    assert caught.value.code == "130429"
    # Without a header the table's default applies; the next call goes through.
    standin.fail_next(1, code=131056)
    with pytest.raises(ExternalError) as pair:
        await client.send_message(wa_out.text_payload(CUSTOMER, "x"))
    assert (pair.value.permanent, pair.value.retry_after) == (False, 10)
    assert await client.send_message(wa_out.text_payload(CUSTOMER, "x"))


@pytest.mark.parametrize("code", [131047, 131026, 100])
async def test_permanent_errors(
    client: WhatsappClient, standin: WhatsappStandin, code: int
) -> None:
    standin.fail_next(1, code=code)
    with pytest.raises(ExternalError) as caught:
        await client.send_message(wa_out.text_payload(CUSTOMER, "x"))
    assert caught.value.permanent is True
    assert caught.value.code == str(code)
    if code == 131047:
        assert "!template" in caught.value.human


async def test_wrong_token_is_permanent(
    http: aiohttp.ClientSession, standin: WhatsappStandin
) -> None:
    section = standin.hub_config() | {"access_token": "EAAwrong"}
    bad = WhatsappClient(http, hub_config(section).channels.whatsapp)
    with pytest.raises(ExternalError) as caught:
        await bad.send_message(wa_out.text_payload(CUSTOMER, "x"))
    assert caught.value.permanent is True
    assert caught.value.code == "190"
    assert "access token" in caught.value.human
    assert standin.requests[-1].status == 401


async def test_timeout_is_temporary(http: aiohttp.ClientSession, standin: WhatsappStandin) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/{tail:.*}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        section = standin.hub_config() | {
            "api_base_url": f"http://127.0.0.1:{port}",
            "request_timeout_seconds": 0.3,
        }
        slow_client = WhatsappClient(http, hub_config(section).channels.whatsapp)
        with pytest.raises(ExternalError) as caught:
            await slow_client.send_message(wa_out.text_payload(CUSTOMER, "x"))
        assert caught.value.permanent is False
        assert "did not answer within" in caught.value.human
    finally:
        await runner.cleanup()


async def test_connection_refused_is_retried_then_temporary(
    http: aiohttp.ClientSession, standin: WhatsappStandin
) -> None:
    section = standin.hub_config() | {"api_base_url": f"http://127.0.0.1:{free_port()}"}
    dead = WhatsappClient(http, hub_config(section).channels.whatsapp)
    with pytest.raises(ExternalError) as caught:
        await dead.send_message(wa_out.text_payload(CUSTOMER, "x"))
    assert caught.value.permanent is False
    assert "cannot connect to WhatsApp" in caught.value.human


async def test_upload_and_fetch_media(client: WhatsappClient, standin: WhatsappStandin) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    media_id = await client.upload_media(png, "swatch.png", "image/png")
    [upload] = [r for r in standin.requests if r.path.endswith("/media")]
    assert upload.form["messaging_product"] == "whatsapp"
    assert upload.form["type"] == "image/png"
    assert upload.form["file"] == {"size": len(png), "type": "image/png", "name": "swatch.png"}
    assert standin.media[media_id] == (png, "image/png")
    # Download as the hub does for a customer's file: GET /{media-id}, then the URL.
    voice = standin.add_media(b"OggS" + b"\x00" * 50, "audio/ogg; codecs=opus")
    data, mime = await client.fetch_media(voice, max_bytes=1000)
    assert data == b"OggS" + b"\x00" * 50
    assert mime == "audio/ogg"
    download = standin.requests[-1]
    assert download.path == "/whatsapp_business/attachments/"
    assert download.headers["Authorization"] == f"Bearer {standin.access_token}"


async def test_fetch_media_refuses_big_files(
    client: WhatsappClient, standin: WhatsappStandin
) -> None:
    big = standin.add_media(b"x" * 5000, "application/pdf")
    with pytest.raises(ExternalError) as caught:
        await client.fetch_media(big, max_bytes=1024)
    assert caught.value.permanent is True
    with pytest.raises(ExternalError) as gone:
        await client.fetch_media("123", max_bytes=1024)
    assert gone.value.permanent is True  # unknown media id: (#100) invalid parameter


# --- the channel's send ------------------------------------------------------------------


async def test_window_closed_refuses_free_text_but_not_templates(
    channel: WhatsappChannel, standin: WhatsappStandin
) -> None:
    for last in (None, datetime.now(UTC) - timedelta(hours=25)):
        with pytest.raises(ExternalError) as caught:
            await channel.send(message(last_inbound_at=last))
        assert caught.value.permanent is True
        assert caught.value.code == "window_closed"
        assert "The 24-hour window has closed" in caught.value.human
        assert "!template NAME" in caught.value.human
        assert "order_update, hello_world" in caught.value.human
    assert standin.sent() == []
    template = message(
        kind="template",
        text="[Template order_update] …",
        last_inbound_at=None,
        data={"name": "order_update", "language": "de", "params": ["Anna", "4711"]},
    )
    await channel.send(template)
    [rec] = standin.sent()
    assert rec.json["template"]["name"] == "order_update"
    assert rec.json["template"]["components"][0]["parameters"][1] == {
        "type": "text",
        "text": "4711",
    }


async def test_html_is_converted_and_long_text_split(
    channel: WhatsappChannel, standin: WhatsappStandin
) -> None:
    wamid = await channel.send(
        message(text="**Hi**", html="<strong>Hi</strong> Anna", reply_to_remote_id="wamid.IN")
    )
    [first] = standin.sent()
    assert first.json["text"]["body"] == "*Hi* Anna"
    assert first.json["context"] == {"message_id": "wamid.IN"}
    assert wamid == first.response["messages"][0]["id"]

    long_text = " ".join(f"Satz{n} mit Umlauten äöü" for n in range(400))
    wamid = await channel.send(message(text=long_text, reply_to_remote_id="wamid.IN"))
    parts = standin.sent()[1:]
    assert len(parts) == 3
    assert all(len(p.json["text"]["body"]) <= 4096 for p in parts)
    assert " ".join(p.json["text"]["body"] for p in parts) == long_text
    assert "context" in parts[0].json and "context" not in parts[1].json
    assert wamid == parts[0].response["messages"][0]["id"]


async def test_media_is_uploaded_then_sent_by_id(
    channel: WhatsappChannel, standin: WhatsappStandin
) -> None:
    pdf = b"%PDF-1.4 test"
    channel.deps.media.files["m1"] = pdf  # type: ignore[attr-defined]
    ref = MediaRef("Angebot.pdf", "application/pdf", len(pdf), media_id="m1")
    await channel.send(message(kind="file", text="Ihr Angebot", media=ref))
    [rec] = standin.sent()
    media_id = rec.json["document"]["id"]
    assert standin.media[media_id] == (pdf, "application/pdf")
    assert rec.json["document"] == {
        "id": media_id,
        "caption": "Ihr Angebot",
        "filename": "Angebot.pdf",
    }


async def test_buttons_reactions_and_mark_read_payloads(
    channel: WhatsappChannel, standin: WhatsappStandin
) -> None:
    await channel.send(message(text="Which colour?", buttons=(Button("red", "Red"),)))
    await channel.send(
        message(text="Delivery?", buttons=(Button("x", "Express", "1 day"),), list_button="Pick")
    )
    await channel.send_reaction(CUSTOMER, "wamid.IN", "❤️")
    kinds = [r.json["interactive"]["type"] for r in standin.sent()[:2]]
    assert kinds == ["button", "list"]
    assert standin.sent()[2].json["reaction"] == {"message_id": "wamid.IN", "emoji": "❤️"}
