"""Messenger and Instagram end to end: signed webhooks from the Meta stand-in → hub → real
Synapse → an adviser in a Matrix client, and the adviser's answers → the Send API."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Stack
from tests.e2e.helpers import Adviser, is_message, tiny_png
from tests.standins.meta import MetaStandin, rate_limited

pytestmark = pytest.mark.e2e

LABELS = {"messenger": "Messenger", "instagram": "Instagram"}
HOUR_MS = 3600 * 1000


@pytest.fixture(params=["messenger", "instagram"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def meta(stack: Stack, kind: str) -> MetaStandin:
    standin: MetaStandin = stack.standins[kind]
    return standin


def customer_id() -> str:
    """A PSID/IGSID-like id whose first 8 digits (the room name) are unique."""
    return str(10**15 + secrets.randbelow(9 * 10**15))


def room_label(kind: str, customer: str) -> str:
    return f"{LABELS[kind]} · {customer[:8]}"


async def eventually(check: Callable[[], Any], timeout: float = 20) -> Any:
    """Poll stand-in state (which has no event to wait on) until `check` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def deliver(stack: Stack, meta: MetaStandin, *events: dict[str, Any]) -> None:
    status, text = await meta.post_webhook(stack.hub_url, meta.batch(*events))
    assert status == 200, text


async def open_room(
    stack: Stack, adviser: Adviser, meta: MetaStandin, customer: str, text: str, **kw: Any
) -> str:
    await deliver(stack, meta, meta.text_event(customer, text, **kw))
    room_id = await adviser.wait_invite(room_label(meta.kind, customer))
    await adviser.join(room_id)
    await adviser.wait_event(room_id, is_message(body=text))
    return room_id


def texts_sent(meta: MetaStandin, customer: str) -> list[str]:
    return [s["message"].get("text") for s in meta.sent_to(customer) if "text" in s["message"]]


def bodies(adviser: Adviser, room_id: str) -> list[str]:
    return [ev["content"]["body"] for ev in adviser.room_events(room_id, is_message())]


async def test_unsigned_or_wrongly_signed_webhooks_store_nothing(
    stack: Stack, adviser: Adviser, meta: MetaStandin
) -> None:
    customer = customer_id()
    forged = meta.batch(meta.text_event(customer, "forged message"))
    assert (await meta.post_webhook(stack.hub_url, forged, signature="missing"))[0] == 401
    assert (await meta.post_webhook(stack.hub_url, forged, signature="wrong"))[0] == 403
    other = "page" if meta.kind == "instagram" else "instagram"
    assert (await meta.post_webhook(stack.hub_url, {**forged, "object": other}))[0] == 400
    room_id = await open_room(stack, adviser, meta, customer, "the real one")
    assert bodies(adviser, room_id) == ["the real one"]


async def test_batch_of_two_customers_echo_and_redelivery(
    stack: Stack, adviser: Adviser, meta: MetaStandin
) -> None:
    anna, bert = customer_id(), customer_id()
    batch = meta.batch(
        entries=[
            [meta.text_event(anna, "Hallo von Anna"), meta.echo_event(anna, "our own echo")],
            [meta.text_event(bert, "Hallo von Bert")],
        ]
    )
    assert (await meta.post_webhook(stack.hub_url, batch))[0] == 200
    room_anna = await adviser.wait_invite(room_label(meta.kind, anna))
    room_bert = await adviser.wait_invite(room_label(meta.kind, bert))
    assert room_anna != room_bert
    for room_id in (room_anna, room_bert):
        await adviser.join(room_id)
    await adviser.wait_event(room_bert, is_message(body="Hallo von Bert"))
    # Meta redelivers the whole batch: nothing is bridged twice.
    assert (await meta.post_webhook(stack.hub_url, batch))[0] == 200
    await deliver(stack, meta, meta.text_event(anna, "marker"))
    await adviser.wait_event(room_anna, is_message(body="marker"))
    assert bodies(adviser, room_anna) == ["Hallo von Anna", "marker"]
    assert bodies(adviser, room_bert) == ["Hallo von Bert"]


async def test_text_both_ways_with_umlauts_emoji_and_rtl(
    stack: Stack, adviser: Adviser, meta: MetaStandin
) -> None:
    customer = customer_id()
    text = "Grüße aus Köln 🎨 — مرحبا بكم"
    room_id = await open_room(stack, adviser, meta, customer, text)
    ghost = adviser.room_events(room_id, is_message(body=text))[0]["sender"]
    assert ghost.startswith(f"@customer_{'fb' if meta.kind == 'messenger' else 'ig'}_")
    assert customer not in ghost  # opaque
    members = (await adviser.client.joined_members(room_id)).members
    assert {m.user_id: m.display_name for m in members}[ghost] == "Kunde"  # no name yet
    answer = "Danke! 🙏 שלום — wir melden uns"
    await adviser.send_text(room_id, answer)
    await eventually(lambda: answer in texts_sent(meta, customer))
    sent = meta.sent_to(customer)[-1]
    assert sent["messaging_type"] == "RESPONSE" and "tag" not in sent


async def test_images_both_ways(stack: Stack, adviser: Adviser, meta: MetaStandin) -> None:
    customer = customer_id()
    room_id = await open_room(stack, adviser, meta, customer, "Ich schicke ein Foto")
    png = tiny_png((200, 30, 30))
    url = meta.add_file(png, "image/png", "wall.png")
    await deliver(stack, meta, meta.attachment_event(customer, "image", url))
    ev = await adviser.wait_event(room_id, is_message(msgtype="m.image"))
    assert ev["content"]["info"]["mimetype"] == "image/png"
    download = await adviser.client.download(mxc=ev["content"]["url"])
    assert getattr(download, "body", None) == png

    blue = tiny_png((20, 40, 220))
    up, _ = await adviser.client.upload(
        lambda *_: blue, content_type="image/png", filename="swatch.png", filesize=len(blue)
    )
    content = {
        "msgtype": "m.image",
        "body": "swatch.png",
        "url": up.content_uri,
        "info": {"mimetype": "image/png", "size": len(blue)},
    }
    await adviser.client.room_send(room_id, "m.room.message", content)
    sent = await eventually(
        lambda: [s for s in meta.sent_to(customer) if "attachment" in s["message"]]
    )
    attachment = sent[0]["message"]["attachment"]
    assert attachment["type"] == "image"
    upload = meta.uploads[attachment["payload"]["attachment_id"]]
    assert (upload["data"], upload["mimetype"]) == (blue, "image/png")


async def test_instagram_story_mention_is_a_notice_with_the_link(
    stack: Stack, adviser: Adviser, meta: MetaStandin
) -> None:
    if meta.kind != "instagram":
        pytest.skip("story mentions exist on Instagram only")
    customer = customer_id()
    room_id = await open_room(stack, adviser, meta, customer, "Hi!")
    story = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=17900000000000001&signature=x"
    await deliver(stack, meta, meta.story_mention_event(customer, story))
    notice = await adviser.wait_event(room_id, is_message(msgtype="m.notice"))
    assert story in notice["content"]["body"]
    assert "„story mention“" in notice["content"]["body"]  # German shop: „Typ „story mention“…


async def test_rate_limit_is_retried_then_delivered(
    stack: Stack, adviser: Adviser, meta: MetaStandin
) -> None:
    customer = customer_id()
    room_id = await open_room(stack, adviser, meta, customer, "Noch da?")
    meta.fail_next(1, rate_limited(retry_after="1"))
    await adviser.send_text(room_id, "Ja, einen Moment 🙂")
    await eventually(lambda: "Ja, einen Moment 🙂" in texts_sent(meta, customer))
    calls = [
        r
        for r in meta.message_calls()
        if isinstance(r.json, dict) and r.json["recipient"]["id"] == customer
    ]
    assert len(calls) == 2  # refused with 429 once, then accepted
    assert texts_sent(meta, customer) == ["Ja, einen Moment 🙂"]
    assert not adviser.room_events(room_id, is_message(msgtype="m.notice"))


async def test_outside_the_window_without_tag_is_refused_in_the_room(
    stack: Stack, adviser: Adviser, meta: MetaStandin
) -> None:
    customer = customer_id()
    old = meta.now_ms() - 30 * HOUR_MS  # the customer wrote 30 hours ago
    room_id = await open_room(stack, adviser, meta, customer, "Von gestern", timestamp=old)
    calls_before = len(meta.message_calls())
    event_id = await adviser.send_text(room_id, "Sorry for the delay")
    notice = await adviser.wait_event(
        room_id, is_message(sender=stack.bot_mxid, msgtype="m.notice")
    )
    assert "24-Stunden-Fenster ist geschlossen" in notice["content"]["body"]
    assert "vor 30 Stunden" in notice["content"]["body"]
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event_id
    assert len(meta.message_calls()) == calls_before  # the hub refused; Meta was not asked


@pytest.fixture
async def human_agent_tag(stack: Stack) -> AsyncIterator[None]:
    """Restart the hub with human_agent_tag on for both Meta channels, then restore."""
    original = stack.config_path.read_text()
    config = yaml.safe_load(original)
    for name in ("messenger", "instagram"):
        config["channels"][name]["human_agent_tag"] = True
    stack.config_path.write_text(yaml.safe_dump(config))
    await stack.hub.stop()
    await stack.hub.start()
    try:
        yield
    finally:
        stack.config_path.write_text(original)
        await stack.hub.stop()
        await stack.hub.start()


async def test_outside_the_window_with_tag_sends_human_agent(
    stack: Stack, adviser: Adviser, human_agent_tag: None
) -> None:
    for kind in ("messenger", "instagram"):
        meta: MetaStandin = stack.standins[kind]
        customer = customer_id()
        old = meta.now_ms() - 30 * HOUR_MS
        room_id = await open_room(stack, adviser, meta, customer, "Noch Fragen", timestamp=old)
        await adviser.send_text(room_id, "Here is the answer")
        await eventually(lambda m=meta, c=customer: texts_sent(m, c) == ["Here is the answer"])
        sent = meta.sent_to(customer)[-1]
        assert (sent["messaging_type"], sent["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
        # Beyond 7 days even the tag does not help.
        late, very_old = customer_id(), meta.now_ms() - 8 * 24 * HOUR_MS
        late_room = await open_room(stack, adviser, meta, late, "Alt", timestamp=very_old)
        await adviser.send_text(late_room, "Too late?")
        notice = await adviser.wait_event(
            late_room, is_message(sender=stack.bot_mxid, msgtype="m.notice")
        )
        assert "länger als die 7 Tage" in notice["content"]["body"]
        assert meta.sent_to(late) == []
