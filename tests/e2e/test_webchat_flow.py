"""The spine end to end: widget visitor ↔ hub ↔ real Synapse ↔ adviser in a Matrix client."""

from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import Adviser, Visitor, is_message, open_portal, tiny_png

pytestmark = pytest.mark.e2e


async def test_customer_message_opens_portal_room(
    stack: Stack, adviser: Adviser, visitor: Visitor
) -> None:
    await visitor.start(name="Jürgen Ölfarbe")
    await visitor.say("Hallo! Welche Farbe für Holz außen? 🎨 مرحبا")
    room_id = await adviser.wait_invite("Webchat · Jürgen Ölfarbe")
    await adviser.join(room_id)
    ev = await adviser.wait_event(
        room_id, is_message(body="Hallo! Welche Farbe für Holz außen? 🎨 مرحبا")
    )
    ghost = ev["sender"]
    assert ghost.startswith("@customer_web_") and ghost.endswith(":shop.example")
    assert "jürgen" not in ghost.lower()  # opaque: nothing of the customer in the MXID
    members = (await adviser.client.joined_members(room_id)).members
    by_id = {m.user_id: m.display_name for m in members}
    assert by_id[ghost] == "Jürgen Ölfarbe"
    assert stack.bot_mxid in by_id
    assert stack.adviser_mxid in by_id


async def test_adviser_reply_reaches_widget_live_and_in_history(
    stack: Stack, adviser: Adviser, visitor: Visitor
) -> None:
    room_id = await open_portal(adviser, visitor, "Reply Test", "Do you deliver?")
    await adviser.send_text(room_id, "Yes — within 2 days 🚚")
    got = await visitor.wait_message(lambda m: m["direction"] == "out")
    assert got["text"] == "Yes — within 2 days 🚚"
    assert got["sender_name"] == "Anna Adviser"
    # A reload: same token, the history is all there, in order, once.
    again = Visitor(stack.hub_url, visitor.http)
    again.token = visitor.token
    await again.start()
    assert again.visitor_id == visitor.visitor_id
    texts = [(m["direction"], m["text"]) for m in await again.history()]
    assert texts == [("in", "Do you deliver?"), ("out", "Yes — within 2 days 🚚")]


async def test_images_cross_both_ways(stack: Stack, adviser: Adviser, visitor: Visitor) -> None:
    room_id = await open_portal(adviser, visitor, "Image Test", "I'll send a photo")
    png = tiny_png()
    await visitor.upload(png, "wall.png", "image/png")
    ev = await adviser.wait_event(room_id, is_message(msgtype="m.image"))
    assert ev["content"]["info"]["mimetype"] == "image/png"
    mxc = ev["content"]["url"]
    server, media_id = mxc[len("mxc://") :].split("/")
    async with visitor.http.get(
        f"{stack.synapse.url}/_matrix/client/v1/media/download/{server}/{media_id}",
        headers={"Authorization": f"Bearer {adviser.client.access_token}"},
    ) as resp:
        assert resp.status == 200
        assert await resp.read() == png

    # The adviser answers with an image of their own; the widget shows it.
    blue = tiny_png((20, 40, 220))
    up, _ = await adviser.client.upload(
        lambda *_: blue, content_type="image/png", filename="swatch.png", filesize=len(blue)
    )
    await adviser.client.room_send(
        room_id,
        "m.room.message",
        {
            "msgtype": "m.image",
            "body": "swatch.png",
            "url": up.content_uri,
            "info": {"mimetype": "image/png", "size": len(blue)},
        },
    )
    got = await visitor.wait_message(lambda m: m["direction"] == "out" and m["kind"] == "image")
    async with visitor.http.get(got["media"]["url"]) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert await resp.read() == blue


async def test_help_is_for_advisers_only(stack: Stack, adviser: Adviser, visitor: Visitor) -> None:
    room_id = await open_portal(adviser, visitor, "Help Test", "hello")
    # The customer typing a command is plain text for the advisers, never a command.
    await visitor.say("!help")
    customer_help = await adviser.wait_event(room_id, is_message(body="!help"))
    assert customer_help["sender"].startswith("@customer_web_")

    event_id = await adviser.send_text(room_id, "!help")
    notice = await adviser.wait_event(
        room_id, lambda ev: is_message(sender=stack.bot_mxid, msgtype="m.notice")(ev)
    )
    assert "!help" in notice["content"]["body"]
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event_id
    reaction = await adviser.wait_event(room_id, lambda ev: ev.get("type") == "m.reaction")
    assert reaction["content"]["m.relates_to"] == {
        "rel_type": "m.annotation",
        "event_id": event_id,
        "key": "✅",
    }
    # Exactly one answer: to the adviser's !help, none to the customer's.
    notices = adviser.room_events(room_id, is_message(sender=stack.bot_mxid, msgtype="m.notice"))
    assert len(notices) == 1
    # A command never reaches the customer.
    history = await visitor.history()
    assert all(m["direction"] == "in" for m in history)


async def test_wrong_command_gets_refusal(stack: Stack, adviser: Adviser, visitor: Visitor) -> None:
    room_id = await open_portal(adviser, visitor, "Typo Test", "hi")
    event_id = await adviser.send_text(room_id, "!hepl")
    notice = await adviser.wait_event(
        room_id, is_message(sender=stack.bot_mxid, msgtype="m.notice")
    )
    assert "war !help gemeint?" in notice["content"]["body"]  # the shop is German
    reaction = await adviser.wait_event(room_id, lambda ev: ev.get("type") == "m.reaction")
    assert reaction["content"]["m.relates_to"]["key"] == "⛔"
    assert reaction["content"]["m.relates_to"]["event_id"] == event_id


async def _hub_alive(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{stack.hub_url}/healthz") as resp:
        assert resp.status == 200


async def test_kill9_restart_loses_nothing_and_duplicates_nothing(
    stack: Stack, adviser: Adviser, visitor: Visitor
) -> None:
    room_id = await open_portal(adviser, visitor, "Crash Test", "before the crash")

    # 1. The adviser writes while the hub is dead: Synapse queues the transaction, the hub's
    #    ping at start makes Synapse send it at once.
    stack.hub.kill9()
    await adviser.send_text(room_id, "written while the hub was down")
    await stack.hub.start()
    await visitor.disconnect()
    visitor.received.clear()
    await visitor.connect()
    got = await visitor.wait_message(
        lambda m: m["text"] == "written while the hub was down", timeout=30
    )
    assert got["direction"] == "out"

    # 2. The customer's message is accepted, then the hub dies at once: delivered after restart.
    client_id = "crash-test-client-id-1"
    await visitor.say("sent just before the crash", client_id=client_id)
    stack.hub.kill9()
    await stack.hub.start()
    # The widget retries the same message (it never saw the answer): no duplicate.
    await visitor.say("sent just before the crash", client_id=client_id)
    await adviser.wait_event(room_id, is_message(body="sent just before the crash"), timeout=30)

    await visitor.disconnect()
    await visitor.connect()
    await adviser.send_text(room_id, "after restart")
    await visitor.wait_message(lambda m: m["text"] == "after restart")
    await _hub_alive(stack, visitor.http)

    in_room = adviser.room_events(room_id, is_message(body="sent just before the crash"))
    assert len(in_room) == 1
    history = await visitor.history()
    texts = [m["text"] for m in history]
    assert texts.count("written while the hub was down") == 1
    assert texts.count("sent just before the crash") == 1
    assert texts.count("after restart") == 1


async def test_delivery_and_read_status_cross_both_ways(
    stack: Stack, adviser: Adviser, visitor: Visitor
) -> None:
    room_id = await open_portal(adviser, visitor, "Receipt Test", "first")
    mine = await visitor.say("did you read this?")
    ghost_event = await adviser.wait_event(room_id, is_message(body="did you read this?"))
    await visitor.wait_status(mine["id"], "delivered")
    # The adviser reads it in their client: the widget shows "read".
    await adviser.client.update_receipt_marker(room_id, ghost_event["event_id"])
    await visitor.wait_status(mine["id"], "read")
    assert {m["status"] for m in await visitor.history() if m["direction"] == "in"} == {"read"}

    # The customer sees the adviser's answer: the adviser's client shows the ghost's receipt.
    answer_id = await adviser.send_text(room_id, "yes, just now")
    got = await visitor.wait_message(lambda m: m["text"] == "yes, just now")
    await visitor.send_ws({"type": "read", "up_to": got["id"]})
    ghost = ghost_event["sender"]
    await adviser.wait_for(lambda: (room_id, answer_id, ghost) in adviser.receipts)
