"""WhatsApp end to end: Meta's signed webhooks (from the stand-in) → hub → real Synapse →
a nio adviser, and the adviser's answers → hub → the Graph API stand-in."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    Adviser,
    Visitor,
    is_message,
    open_portal,
    tiny_png,
    wait_remote_id_stored,
)
from tests.standins.whatsapp import WhatsappStandin

pytestmark = pytest.mark.e2e


def new_wa_id() -> str:
    return "49151" + "".join(str(secrets.randbelow(10)) for _ in range(8))


def standin(stack: Stack) -> WhatsappStandin:
    return stack.standins["whatsapp"]  # type: ignore[no-any-return]


async def post(stack: Stack, payload: dict[str, Any], **kwargs: Any) -> int:
    status, _ = await standin(stack).post_webhook(stack.hub_url, payload, **kwargs)
    return status


async def customer_says(stack: Stack, wa_id: str, name: str, text: str, **kw: Any) -> str:
    payload, wamid = standin(stack).text_webhook(wa_id, name, text, **kw)
    assert await post(stack, payload) == 200
    return wamid


async def open_room(
    stack: Stack, adviser: Adviser, wa_id: str, name: str, text: str, **kw: Any
) -> str:
    await customer_says(stack, wa_id, name, text, **kw)
    room_id = await adviser.wait_invite(f"WhatsApp · {name}")
    await adviser.join(room_id)
    await adviser.wait_event(room_id, is_message(body=text))
    return room_id


def to(wa_id: str, body: str | None = None, kind: str | None = None) -> Any:
    def check(doc: dict[str, Any]) -> bool:
        if doc.get("to") != wa_id:
            return False
        if kind is not None and doc.get("type") != kind:
            return False
        return body is None or doc.get("text", {}).get("body") == body

    return check


def bot_notice(stack: Stack, contains: str) -> Any:
    def check(ev: dict[str, Any]) -> bool:
        c = ev.get("content", {})
        return (
            ev.get("type") == "m.room.message"
            and ev.get("sender") == stack.bot_mxid
            and c.get("msgtype") == "m.notice"
            and contains in c.get("body", "")
        )

    return check


async def download(stack: Stack, adviser: Adviser, mxc: str) -> bytes:
    server, media_id = mxc[len("mxc://") :].split("/")
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{stack.synapse.url}/_matrix/client/v1/media/download/{server}/{media_id}",
            headers={"Authorization": f"Bearer {adviser.client.access_token}"},
        ) as resp,
    ):
        assert resp.status == 200
        return await resp.read()


# --- webhook security ----------------------------------------------------------------------


async def test_verification_handshake(stack: Stack, http: aiohttp.ClientSession) -> None:
    token = standin(stack).verify_token
    url = f"{stack.hub_url}/webhooks/whatsapp"
    query = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "1158201444"}
    async with http.get(url, params=query) as resp:
        assert resp.status == 200
        assert await resp.text() == "1158201444"
    async with http.get(url, params=query | {"hub.verify_token": "wrong"}) as resp:
        assert resp.status == 403


async def test_unsigned_and_forged_webhooks_are_refused(
    stack: Stack, adviser: Adviser, http: aiohttp.ClientSession
) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Mallory Fälscher"
    forged, _ = wa.text_webhook(wa_id, name, "forged: pay to IBAN XX")
    assert await post(stack, forged, signature=None) == 401
    assert await post(stack, forged, signature="sha256=" + "0" * 64) == 403
    assert await post(stack, forged, signature="not-a-signature") == 403
    # Signed with another secret, and a correct signature over different bytes.
    raw = json.dumps(forged, separators=(",", ":")).encode()
    other = "sha256=" + hmac.new(b"another secret", raw, hashlib.sha256).hexdigest()
    assert await post(stack, forged, raw=raw, signature=other) == 403
    tampered = raw.replace(b"forged", b"FORGED")
    assert await post(stack, forged, raw=tampered, signature=wa.sign(raw)) == 403
    async with http.get(f"{stack.hub_url}/healthz") as resp:
        assert resp.status == 200

    # The same customer then really writes: had a forgery been stored, it would come first.
    room_id = await open_room(stack, adviser, wa_id, name, "genuine hello")
    texts = [ev["content"].get("body", "") for ev in adviser.room_events(room_id, is_message())]
    assert not [t for t in texts if "forged" in t.lower()]


async def test_malformed_body_is_400(stack: Stack) -> None:
    wa = standin(stack)
    raw = b"{not json"
    assert await post(stack, {}, raw=raw, signature=wa.sign(raw)) == 400


# --- inbound -----------------------------------------------------------------------------


async def test_batch_with_several_customers(stack: Stack, adviser: Adviser) -> None:
    wa = standin(stack)
    people = [(new_wa_id(), "Jürgen Ölfarbe"), (new_wa_id(), "Ayşe Yılmaz"), (new_wa_id(), "Zoë")]
    msgs = [wa.message(w, "text", {"body": f"Hallo von {n}"}) for w, n in people]
    payload = wa.webhook(
        [wa.value(people[:2], msgs[:2])],  # one change, two customers
        [wa.value(people[2:], msgs[2:])],  # a second entry
    )
    assert await post(stack, payload) == 200
    for _wa_id, name in people:
        room_id = await adviser.wait_invite(f"WhatsApp · {name}")
        await adviser.join(room_id)
        ev = await adviser.wait_event(room_id, is_message(body=f"Hallo von {name}"))
        assert ev["sender"].startswith("@customer_wa_")


async def test_redelivered_message_is_bridged_once(stack: Stack, adviser: Adviser) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Redelivery Test"
    payload, _ = wa.text_webhook(wa_id, name, "only once please")
    assert await post(stack, payload) == 200
    assert await post(stack, payload) == 200  # Meta retries when it missed our 200
    room_id = await adviser.wait_invite(f"WhatsApp · {name}")
    await adviser.join(room_id)
    await customer_says(stack, wa_id, name, "second message")
    await adviser.wait_event(room_id, is_message(body="second message"))
    assert len(adviser.room_events(room_id, is_message(body="only once please"))) == 1


async def test_umlauts_emoji_and_rtl_cross_both_ways(stack: Stack, adviser: Adviser) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Łukasz Müller-Ørsted"
    text = "Grüße aus Köln 👋🏽 — مرحبا بكم، שלום! ½ €"
    room_id = await open_room(stack, adviser, wa_id, name, text)
    ev = adviser.room_events(room_id, is_message(body=text))[0]
    assert ev["content"]["body"] == text
    await adviser.send_text(room_id, "Danke schön 🙏 — شكرا — תודה")
    [rec] = await wa.wait_sent(to(wa_id, "Danke schön 🙏 — شكرا — תודה"))
    assert rec.json["type"] == "text"


async def test_customer_image_arrives_with_the_same_bytes(stack: Stack, adviser: Adviser) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Bild Kundin"
    room_id = await open_room(stack, adviser, wa_id, name, "Ich schicke ein Foto")
    png = tiny_png((200, 30, 30))
    media_id = wa.add_media(png, "image/png")
    payload, _ = wa.media_webhook(wa_id, name, "image", media_id, caption="Diese Farbe?")
    assert await post(stack, payload) == 200
    ev = await adviser.wait_event(room_id, is_message(msgtype="m.image"))
    assert ev["content"]["info"]["mimetype"] == "image/png"
    assert await download(stack, adviser, ev["content"]["url"]) == png
    shown = [e["content"].get("body") for e in adviser.room_events(room_id, is_message())]
    assert any("Diese Farbe?" in (b or "") for b in shown)


async def test_adviser_image_is_uploaded_then_sent_by_id(stack: Stack, adviser: Adviser) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Bild Kunde"
    room_id = await open_room(stack, adviser, wa_id, name, "Zeigen Sie mir die Farbe")
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
    [rec] = await wa.wait_sent(to(wa_id, kind="image"))
    media_id = rec.json["image"]["id"]
    assert wa.media[media_id] == (blue, "image/png")
    upload = next(
        r
        for r in wa.requests
        if r.path.endswith("/media") and r.status == 200 and r.response == {"id": media_id}
    )
    assert wa.requests.index(upload) < wa.requests.index(rec)


async def test_voice_notes_get_one_reply_a_day(stack: Stack, adviser: Adviser) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Sprachnachricht Fan"
    room_id = await open_room(stack, adviser, wa_id, name, "Hallo!")
    for n in range(2):
        media_id = wa.add_media(b"OggS" + bytes([n]) * 64, "audio/ogg; codecs=opus")
        payload, _ = wa.media_webhook(wa_id, name, "audio", media_id, voice=True)
        assert await post(stack, payload) == 200
    await adviser.wait_for(
        lambda: len(adviser.room_events(room_id, is_message(msgtype="m.audio"))) == 2
    )
    await wa.wait_sent(to(wa_id, wa.voice_note_reply))
    await adviser.wait_event(room_id, bot_notice(stack, "Antwort auf Sprachnachricht"))
    # The conversation's jobs go out in order: once a later message arrived, a second voice
    # reply (queued before it) would have too.
    await adviser.send_text(room_id, "Gern, schreiben Sie einfach.")
    await wa.wait_sent(to(wa_id, "Gern, schreiben Sie einfach."))
    assert len(wa.sent(to(wa_id, wa.voice_note_reply))) == 1


async def test_rich_inbound_messages_are_never_silent(stack: Stack, adviser: Adviser) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Reiche Nachrichten"
    room_id = await open_room(stack, adviser, wa_id, name, "Moment")
    location = wa.message(
        wa_id,
        "location",
        {"latitude": 50.9375, "longitude": 6.9603, "name": "Dom", "address": "Köln"},
    )
    order = wa.message(
        wa_id,
        "order",
        {
            "catalog_id": "194836987003835",
            "text": "Bitte liefern",
            "product_items": [
                {
                    "product_retailer_id": "LACK-ROT-1L",
                    "quantity": 2,
                    "item_price": 12.9,
                    "currency": "EUR",
                }
            ],
        },
    )
    poll = wa.message(wa_id, "unsupported", {"type": "poll"})
    payload = wa.webhook([wa.value([(wa_id, name)], [location, order, poll])])
    assert await post(stack, payload) == 200
    await adviser.wait_event(room_id, is_message(msgtype="m.location"))
    ev = await adviser.wait_event(
        room_id, lambda e: "LACK-ROT-1L" in e.get("content", {}).get("body", "")
    )
    assert "12,90\u00a0€" in ev["content"]["body"]  # the shop's locale writes the price
    await adviser.wait_event(room_id, lambda e: "poll" in e.get("content", {}).get("body", ""))


# --- outbound ----------------------------------------------------------------------------


async def test_failed_status_notice_replies_to_the_advisers_message(
    stack: Stack, adviser: Adviser
) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Status Test"
    room_id = await open_room(stack, adviser, wa_id, name, "Wo bleibt meine Farbe?")
    event_id = await adviser.send_text(room_id, "Sie ist unterwegs.")
    [rec] = await wa.wait_sent(to(wa_id, "Sie ist unterwegs."))
    wamid = rec.response["messages"][0]["id"]
    await wait_remote_id_stored(stack.config_path, "whatsapp", wamid)
    for status in ("sent", "delivered"):
        assert await post(stack, wa.status_webhook(wamid, status, wa_id)) == 200
    failed = wa.status_webhook(wamid, "failed", wa_id, error_code=131047)
    assert await post(stack, failed) == 200
    notice = await adviser.wait_event(room_id, bot_notice(stack, "mehr als 24 Stunden her"))
    assert "!template" in notice["content"]["body"]
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event_id


async def test_window_closed_refuses_free_text_and_template_goes_out(
    stack: Stack, adviser: Adviser
) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Fenster Zu"
    # The customer wrote two days ago (Meta delivers late after an outage, or the hub was
    # down): the window counts from the message's own timestamp.
    two_days_ago = int(time.time()) - 2 * 24 * 3600
    room_id = await open_room(
        stack, adviser, wa_id, name, "Ich melde mich später", timestamp=two_days_ago
    )

    event_id = await adviser.send_text(room_id, "Sind Sie noch da?")
    notice = await adviser.wait_event(
        room_id, bot_notice(stack, "24-Stunden-Fenster ist geschlossen")
    )
    assert "!template NAME" in notice["content"]["body"]
    assert "order_update" in notice["content"]["body"]
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event_id

    wrong = await adviser.send_text(room_id, "!template order_update Anna")
    refusal = await adviser.wait_event(room_id, bot_notice(stack, "erwartet 2 Parameter"))
    assert refusal["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == wrong

    command = await adviser.send_text(room_id, '!template order_update "Anna Müller" A-4711')
    await adviser.wait_event(
        room_id, bot_notice(stack, "Vorlage order_update wird an den Kunden gesendet")
    )
    ok = await adviser.wait_event(
        room_id,
        lambda e: (
            e.get("type") == "m.reaction" and e["content"]["m.relates_to"]["event_id"] == command
        ),
    )
    assert ok["content"]["m.relates_to"]["key"] == "✅"
    [rec] = await wa.wait_sent(to(wa_id, kind="template"))
    assert rec.json["template"] == {
        "name": "order_update",
        "language": {"code": "de"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Anna Müller"},
                    {"type": "text", "text": "A-4711"},
                ],
            }
        ],
    }
    assert wa.sent(to(wa_id, "Sind Sie noch da?")) == []


async def test_template_command_only_in_whatsapp_rooms_and_lists_templates(
    stack: Stack, adviser: Adviser, visitor: Visitor
) -> None:
    web_room = await open_portal(adviser, visitor, "Web Vorlage", "Hallo aus dem Web")
    await adviser.send_text(web_room, "!template hello_world")
    await adviser.wait_event(web_room, bot_notice(stack, "nur für WhatsApp-Unterhaltungen"))

    wa_id, name = new_wa_id(), "Vorlagen Liste"
    room_id = await open_room(stack, adviser, wa_id, name, "Welche Vorlagen?")
    await adviser.send_text(room_id, "!templates")
    listing = await adviser.wait_event(room_id, bot_notice(stack, "WhatsApp-Vorlagen:"))
    assert "!template order_update P1 P2 (de)" in listing["content"]["body"]
    await adviser.send_text(room_id, "!template nosuch")
    await adviser.wait_event(room_id, bot_notice(stack, "keine Vorlage namens „nosuch“"))


async def test_rate_limited_send_is_retried_until_delivered(stack: Stack, adviser: Adviser) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Drossel Test"
    room_id = await open_room(stack, adviser, wa_id, name, "Hallo")
    text = "Nach dem Limit zugestellt"
    wa.fail_next(2, code=130429, http_status=429, retry_after=1, when=to(wa_id, text))
    await adviser.send_text(room_id, text)
    await wa.wait_sent(to(wa_id, text), timeout=30)
    refused = [r for r in wa.requests if r.status == 429 and r.json and to(wa_id, text)(r.json)]
    assert len(refused) == 2
    assert len(wa.sent(to(wa_id, text))) == 1


async def test_long_adviser_text_is_split(stack: Stack, adviser: Adviser) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Lange Antwort"
    room_id = await open_room(stack, adviser, wa_id, name, "Erzählen Sie mir alles")
    words = [f"Wort{n}-äöü🎨" for n in range(500)]
    text = " ".join(words)
    assert 4096 < len(text) < 8000  # two WhatsApp messages
    await adviser.send_text(room_id, text)
    parts = await wa.wait_sent(to(wa_id, kind="text"), count=2)
    bodies = [p.json["text"]["body"] for p in parts]
    assert all(len(b) <= 4096 for b in bodies)
    assert " ".join(bodies).split(" ") == words
    # Nothing more than the two parts was sent.
    await adviser.send_text(room_id, "Ende")
    await wa.wait_sent(to(wa_id, "Ende"))
    assert len(wa.sent(to(wa_id, kind="text"))) == 3


async def test_read_receipts_cross_both_ways(stack: Stack, adviser: Adviser) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Blaue Haken"
    room_id = await open_room(stack, adviser, wa_id, name, "Haben Sie das gelesen?")
    [ghost_event] = adviser.room_events(room_id, is_message(body="Haben Sie das gelesen?"))
    customer_wamid = await customer_says(stack, wa_id, name, "Und das hier?")
    latest = await adviser.wait_event(room_id, is_message(body="Und das hier?"))
    # The adviser reads: the customer's newest message is marked as read (blue ticks).
    await adviser.client.update_receipt_marker(room_id, latest["event_id"])
    [mark] = await wa.wait_sent(lambda doc: doc.get("message_id") == customer_wamid)
    assert mark.json == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": customer_wamid,
    }
    assert ghost_event["sender"] == latest["sender"]

    # The customer reads the adviser's answer: the ghost's read receipt appears in Matrix.
    answer_id = await adviser.send_text(room_id, "Ja, gelesen!")
    [rec] = await wa.wait_sent(to(wa_id, "Ja, gelesen!"))
    wamid = rec.response["messages"][0]["id"]
    await wait_remote_id_stored(stack.config_path, "whatsapp", wamid)
    assert await post(stack, wa.status_webhook(wamid, "read", wa_id)) == 200
    await adviser.wait_for(lambda: (room_id, answer_id, latest["sender"]) in adviser.receipts)


async def test_reactions_cross_both_ways(stack: Stack, adviser: Adviser) -> None:
    wa = standin(stack)
    wa_id, name = new_wa_id(), "Reaktion Test"
    wamid = await customer_says(stack, wa_id, name, "Schöne Farbe!")
    room_id = await adviser.wait_invite(f"WhatsApp · {name}")
    await adviser.join(room_id)
    ghost_event = await adviser.wait_event(room_id, is_message(body="Schöne Farbe!"))

    # The adviser reacts in Matrix: a WhatsApp reaction to the customer's message.
    await adviser.client.room_send(
        room_id,
        "m.reaction",
        {
            "m.relates_to": {
                "rel_type": "m.annotation",
                "event_id": ghost_event["event_id"],
                "key": "❤️",
            }
        },
    )
    [rec] = await wa.wait_sent(to(wa_id, kind="reaction"))
    assert rec.json["reaction"] == {"message_id": wamid, "emoji": "❤️"}

    # The customer reacts to the adviser's answer: an m.reaction by their ghost.
    answer_id = await adviser.send_text(room_id, "Danke!")
    [sent] = await wa.wait_sent(to(wa_id, "Danke!"))
    answer_wamid = sent.response["messages"][0]["id"]
    await wait_remote_id_stored(stack.config_path, "whatsapp", answer_wamid)
    reaction = wa.message(wa_id, "reaction", {"message_id": answer_wamid, "emoji": "👍"})
    assert await post(stack, wa.webhook([wa.value([(wa_id, name)], [reaction])])) == 200
    ev = await adviser.wait_event(
        room_id,
        lambda e: e.get("type") == "m.reaction" and e["sender"] == ghost_event["sender"],
    )
    assert ev["content"]["m.relates_to"] == {
        "rel_type": "m.annotation",
        "event_id": answer_id,
        "key": "👍",
    }
