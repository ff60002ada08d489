"""The Meta channels against the loopback Graph API stand-in (no Synapse, no database):
the client's error classification, timeouts and downloads; the channel's Send API bodies,
reply window and webhook verification."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.bridges.base import ChannelDeps
from hub.bridges.meta.channel import InstagramChannel, MessengerChannel
from hub.bridges.meta.client import MetaClient
from hub.bridges.webhooks import Webhook
from hub.config import MetaPageConfig, parse_config
from hub.core.media import MediaStore
from hub.core.types import Button, Envelope, InboundMessage, MediaRef, OutboundMessage
from hub.db.inbound import IngestResult
from hub.db.models import utcnow
from hub.devserver.synapse import free_port
from hub.errors import BLOCKED, ExternalError
from tests.standins import meta as standin_module
from tests.standins.meta import MetaStandin

KINDS = ["messenger", "instagram"]
# Graph API rate limits mostly come as HTTP 400 with code 613 (no 429).
RATE_LIMIT_400 = standin_module.Failure(
    400, 613, "(#613) Calls to this api have exceeded the rate limit."
)


@pytest.fixture(params=KINDS)
async def standin(request: pytest.FixtureRequest) -> AsyncIterator[MetaStandin]:
    s = MetaStandin(request.param)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def config_for(standin: MetaStandin, **overrides: Any) -> MetaPageConfig:
    return MetaPageConfig.model_validate({**standin.hub_config(), **overrides})


def client_for(standin: MetaStandin, http: aiohttp.ClientSession, **overrides: Any) -> MetaClient:
    return MetaClient(http, config_for(standin, **overrides), standin.kind)


def text_body(customer: str = "6543210987654321", text: str = "Grüße 🎨") -> dict[str, Any]:
    return {"recipient": {"id": customer}, "messaging_type": "RESPONSE", "message": {"text": text}}


# --- client ----------------------------------------------------------------------------------


async def test_send_uses_the_channel_path_and_the_token_header_only(
    standin: MetaStandin, http: aiohttp.ClientSession
) -> None:
    mid = await client_for(standin, http).send(text_body())
    assert mid == standin.sent[0]["message_id"]
    call = standin.requests[-1]
    node = "me" if standin.kind == "messenger" else standin.page_id
    assert call.path == f"/v21.0/{node}/messages"
    assert call.headers["Authorization"] == f"Bearer {standin.page_access_token}"
    assert call.query == {}  # the token never travels in a URL
    assert call.json == text_body()


async def test_rate_limit_429_is_temporary_with_retry_after(
    standin: MetaStandin, http: aiohttp.ClientSession
) -> None:
    standin.fail_next(1, standin_module.rate_limited(retry_after="7"))
    with pytest.raises(ExternalError) as info:
        await client_for(standin, http).send(text_body())
    err = info.value
    assert (err.permanent, err.retry_after, err.code) == (False, 7.0, "613")
    assert "rate limit" in err.human
    assert await client_for(standin, http).send(text_body())  # the next call goes through


@pytest.mark.parametrize(
    ("failure", "permanent", "code", "words"),
    [
        (standin_module.PERSON_UNAVAILABLE, True, BLOCKED, "isn't available right now"),
        (standin_module.TOKEN_INVALID, True, "190", "page access token"),
        (standin_module.TEMPORARY, False, "2", "temporary"),
        (RATE_LIMIT_400, False, "613", "rate limit"),
    ],
)
async def test_error_table(
    standin: MetaStandin,
    http: aiohttp.ClientSession,
    failure: standin_module.Failure,
    permanent: bool,
    code: str,
    words: str,
) -> None:
    standin.fail_next(1, failure)
    with pytest.raises(ExternalError) as info:
        await client_for(standin, http).send(text_body())
    assert (info.value.permanent, info.value.code) == (permanent, code)
    assert words in info.value.human


async def test_window_error_per_platform(standin: MetaStandin, http: aiohttp.ClientSession) -> None:
    standin.fail_next(1, standin_module.window_closed(standin.kind))
    with pytest.raises(ExternalError) as info:
        await client_for(standin, http).send(text_body())
    subcode = "2018278" if standin.kind == "messenger" else "2534022"
    assert info.value.permanent and info.value.code == f"10/{subcode}"
    assert info.value.human.startswith("the 24-hour window has closed")


async def test_wrong_token_is_refused_permanently(
    standin: MetaStandin, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(ExternalError) as info:
        await client_for(standin, http, page_access_token="EAAG-not-the-token").send(text_body())
    assert info.value.permanent and info.value.code == "190"
    assert standin.sent == []


async def test_timeout_is_temporary(standin: MetaStandin, http: aiohttp.ClientSession) -> None:
    standin.delay_next(1)
    client = client_for(standin, http, request_timeout_seconds=0.3)
    with pytest.raises(ExternalError) as info:
        await client.send(text_body())
    assert not info.value.permanent
    assert "did not answer within 0.3 s" in info.value.human


async def test_unreachable_graph_api_is_temporary(http: aiohttp.ClientSession) -> None:
    dead = MetaStandin("messenger")
    dead.base_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ExternalError) as info:
        await client_for(dead, http).send(text_body())
    assert not info.value.permanent and "cannot connect to Meta" in info.value.human


async def test_upload_attachment_multipart(
    standin: MetaStandin, http: aiohttp.ClientSession
) -> None:
    attachment_id = await client_for(standin, http).upload_attachment(
        "image", b"\x89PNG\r\n\x1a\nfake", "wall.png", "image/png"
    )
    assert standin.uploads[attachment_id]["data"] == b"\x89PNG\r\n\x1a\nfake"
    call = standin.requests[-1]
    assert call.path == f"/v21.0/{standin.page_id}/message_attachments"
    assert call.form is not None
    assert json.loads(call.form["message"]) == {
        "attachment": {"type": "image", "payload": {"is_reusable": True}}
    }
    assert call.form["filedata"][:2] == ("wall.png", "image/png")
    assert call.form.get("platform") == ("instagram" if standin.kind == "instagram" else None)


async def test_download_with_cap_and_expiry(
    standin: MetaStandin, http: aiohttp.ClientSession
) -> None:
    client = client_for(standin, http)
    url = standin.add_file(b"x" * 5000, "image/jpeg", "photo.jpg")
    assert await client.download(url, 10_000) == (b"x" * 5000, "image/jpeg")
    assert "Authorization" not in standin.requests[-1].headers  # no token to the CDN
    with pytest.raises(ExternalError) as too_big:
        await client.download(url, 4096)
    assert too_big.value.permanent and "max_media_bytes" in too_big.value.human
    with pytest.raises(ExternalError) as gone:
        await client.download(standin.base_url + "/cdn/0000/expired.jpg?oe=0", 10_000)
    assert gone.value.permanent and "no longer available" in gone.value.human


async def test_profile_name(standin: MetaStandin, http: aiohttp.ClientSession) -> None:
    standin.profiles["42"] = {"first_name": "Jürgen", "last_name": "Ölfarbe", "name": "Jürgen Ö"}
    name = await client_for(standin, http).profile_name("42")
    assert name == ("Jürgen Ölfarbe" if standin.kind == "messenger" else "Jürgen Ö")


# --- channel ---------------------------------------------------------------------------------


def fake_hub(standin: MetaStandin, http: aiohttp.ClientSession, tmp: Path, **section: Any) -> Any:
    config = parse_config(
        {
            "homeserver": {"url": "http://127.0.0.1:8008", "domain": "shop.example"},
            "appservice": {"as_token": "a1" * 20, "hs_token": "b2" * 20},
            "data_dir": str(tmp),
            "channels": {standin.kind: {**standin.hub_config(), **section}},
        }
    )
    section = getattr(config.channels, standin.kind)
    deps = ChannelDeps(None, http, MediaStore(tmp / "media"), "http://127.0.0.1:29330")  # type: ignore[arg-type]
    return SimpleNamespace(deps=deps, section=section)


def channel_for(standin: MetaStandin, hub: Any) -> MessengerChannel | InstagramChannel:
    cls = MessengerChannel if standin.kind == "messenger" else InstagramChannel
    return cls(hub.deps, hub.section)


def outbound(**kw: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "message_id": 1,
        "conversation_id": 1,
        "external_id": "6543210987654321",
        "kind": "text",
        "text": "Hallo",
        "html": None,
        "media": None,
        "reply_to_remote_id": None,
        "sender_mxid": "@anna:shop.example",
        "sender_name": "Anna",
        "last_inbound_at": utcnow() - timedelta(hours=1),
    }
    return OutboundMessage(**(values | kw))


async def test_channel_window_rules(
    standin: MetaStandin, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    plain = channel_for(standin, fake_hub(standin, http, tmp_path))
    tagged = channel_for(standin, fake_hub(standin, http, tmp_path, human_agent_tag=True))
    await plain.send(outbound())
    assert standin.sent[-1]["messaging_type"] == "RESPONSE"
    late = utcnow() - timedelta(hours=30)
    await tagged.send(outbound(last_inbound_at=late))
    assert (standin.sent[-1]["messaging_type"], standin.sent[-1]["tag"]) == (
        "MESSAGE_TAG",
        "HUMAN_AGENT",
    )
    calls = len(standin.requests)
    with pytest.raises(ExternalError) as info:
        await plain.send(outbound(last_inbound_at=late))
    assert info.value.permanent
    assert info.value.human.startswith("the 24-hour window has closed (the customer last wrote 30")
    with pytest.raises(ExternalError):
        await tagged.send(outbound(last_inbound_at=utcnow() - timedelta(days=8)))
    assert len(standin.requests) == calls  # refused by the hub itself: no call to Meta


async def test_channel_html_split_and_quick_replies(
    standin: MetaStandin, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    channel = channel_for(standin, fake_hub(standin, http, tmp_path))
    long_text = " ".join(["Farbe 🎨 مرحبا"] * 200)  # 2799 characters, 4399 bytes
    html = f"<p>{long_text}</p><p><a href='https://shop.example/x'>Angebot</a></p>"
    buttons = (Button("yes", "Ja, bitte"), Button("no", "Nein danke"))
    first = await channel.send(outbound(text=long_text, html=html, buttons=buttons))
    bodies = standin.sent
    assert first == bodies[0]["message_id"]
    texts = [b["message"]["text"] for b in bodies]
    if standin.kind == "messenger":
        assert len(texts) == 2 and all(len(t) <= 2000 for t in texts)
    else:
        assert len(texts) == 5 and all(len(t.encode()) <= 1000 for t in texts)
    assert texts[-1].endswith("Angebot (https://shop.example/x)")
    assert "quick_replies" not in bodies[0]["message"]
    assert bodies[-1]["message"]["quick_replies"] == [
        {"content_type": "text", "title": "Ja, bitte", "payload": "yes"},
        {"content_type": "text", "title": "Nein danke", "payload": "no"},
    ]


async def test_channel_sends_media_by_upload_then_caption(
    standin: MetaStandin, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    hub = fake_hub(standin, http, tmp_path)
    channel = channel_for(standin, hub)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    media_id = "abcdef123456"
    path = hub.deps.media.path(media_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(png)
    ref = MediaRef("wall.png", "image/png", len(png), media_id=media_id)
    await channel.send(outbound(kind="image", text="Die Wand", media=ref))
    attachment, caption = standin.sent
    attachment_id = attachment["message"]["attachment"]["payload"]["attachment_id"]
    assert attachment["message"]["attachment"]["type"] == "image"
    assert standin.uploads[attachment_id]["data"] == png
    assert caption["message"] == {"text": "Die Wand"}


async def test_channel_fetch_media(
    standin: MetaStandin, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    channel = channel_for(standin, fake_hub(standin, http, tmp_path, max_media_bytes=2048))
    url = standin.add_file(b"%PDF-1.4 tiny", "application/pdf", "Rechnung.pdf")
    ref = MediaRef("Rechnung.pdf", "application/pdf", 0, remote_id=url)
    assert await channel.fetch_media(ref) == (b"%PDF-1.4 tiny", "application/pdf")


@pytest.fixture
async def webhook(
    standin: MetaStandin,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> AsyncIterator[tuple[TestClient, list[Envelope]]]:
    """The channel's webhook pipeline in a bare aiohttp app; ingest replaced by a recorder."""
    got: list[Envelope] = []

    async def fake_ingest(channel: Any, envelopes: list[Envelope]) -> IngestResult:
        got.extend(envelopes)
        return IngestResult(stored=len(envelopes))

    app = web.Application()
    channel = channel_for(standin, fake_hub(standin, http, tmp_path))
    Webhook(channel, fake_ingest, 1_048_576).add_routes(app)  # type: ignore[arg-type]
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, got
    await client.close()


async def _post(client: TestClient, kind: str, raw: bytes, headers: dict[str, str]) -> int:
    resp = await client.post(f"/webhooks/{kind}", data=raw, headers=headers)
    return resp.status


async def test_webhook_signature_before_parsing(
    standin: MetaStandin, webhook: tuple[TestClient, list[Envelope]]
) -> None:
    client, got = webhook
    doc = standin.batch(standin.text_event("111", "Grüße aus Köln 🎨"))
    raw = json.dumps(doc).encode()
    assert b"\\u00fc" in raw  # Meta escapes non-ASCII; the signature covers these bytes
    assert await _post(client, standin.kind, raw, {}) == 401
    bad = {"X-Hub-Signature-256": standin.sign(raw, secret="wrong-secret")}
    assert await _post(client, standin.kind, raw, bad) == 403
    garbage = b"{not json"
    assert await _post(client, standin.kind, garbage, {"X-Hub-Signature-256": "sha256=00"}) == 403
    assert got == []
    good = {"X-Hub-Signature-256": standin.sign(raw)}
    assert await _post(client, standin.kind, raw, good) == 200
    assert len(got) == 1 and isinstance(got[0].event, InboundMessage)
    assert got[0].event.text == "Grüße aus Köln 🎨"
    signed_garbage = {"X-Hub-Signature-256": standin.sign(garbage)}
    assert await _post(client, standin.kind, garbage, signed_garbage) == 400


async def test_webhook_refuses_the_other_object(
    standin: MetaStandin, webhook: tuple[TestClient, list[Envelope]]
) -> None:
    client, got = webhook
    doc = standin.batch(standin.text_event("111", "hi"))
    doc["object"] = "instagram" if standin.kind == "messenger" else "page"
    raw = json.dumps(doc).encode()
    assert await _post(client, standin.kind, raw, {"X-Hub-Signature-256": standin.sign(raw)}) == 400
    assert got == []


async def test_webhook_verification_handshake(
    standin: MetaStandin, webhook: tuple[TestClient, list[Envelope]]
) -> None:
    client, _ = webhook
    query = {"hub.mode": "subscribe", "hub.challenge": "1158201444"}
    ok = await client.get(
        f"/webhooks/{standin.kind}", params={**query, "hub.verify_token": standin.verify_token}
    )
    assert (ok.status, await ok.text()) == (200, "1158201444")
    bad = await client.get(
        f"/webhooks/{standin.kind}",
        params={**query, "hub.verify_token": hashlib.sha256(b"x").hexdigest()},
    )
    assert bad.status == 403


async def test_channel_display_name_lookup(
    standin: MetaStandin, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    channel = channel_for(standin, fake_hub(standin, http, tmp_path))
    standin.profiles["77"] = {"first_name": "Ana", "last_name": "Ruiz", "name": "Ana Ruiz"}
    assert await channel.fetch_display_name("77") == "Ana Ruiz"
    assert await channel.fetch_display_name("unknown") is None  # Meta refuses: no name
