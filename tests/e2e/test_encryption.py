"""Acceptance tests of end-to-bridge encryption (issue 13): encrypted portal rooms on a real
Synapse that encrypts every new room, the hub's bot device, and an adviser in an encrypting
Matrix client. Customers write through the WhatsApp stand-in, which records what reaches them.

When a test fails, its teardown prints the hub log's lines about encryption (pytest shows
them under "Captured stdout teardown")."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.e2e import encrypted_stack as _encrypted_stack_module
from tests.e2e.crypto_adviser import CryptoAdviser, Seen, clear_events
from tests.e2e.encrypted_stack import BOT_DEVICE, EncryptedStack
from tests.e2e.helpers import is_message, tiny_png

pytestmark = pytest.mark.e2e

# The module-scoped fixture, made visible to this module's tests.
encrypted_stack = _encrypted_stack_module.encrypted_stack

# Hub log lines worth printing when a test fails.
LOG_NEEDLES = ("WARNING", "ERROR", "Traceback", "crypt", "olm", "megolm", "room key", "device")


@pytest.fixture
async def es(encrypted_stack: EncryptedStack) -> AsyncIterator[EncryptedStack]:
    """The stack, with the hub log of this test printed at teardown (shown on failure)."""
    since = encrypted_stack.hub_log_size()
    yield encrypted_stack
    lines = encrypted_stack.hub_log_lines(*LOG_NEEDLES, since=since)
    print(f"--- hub log ({encrypted_stack.hub_log}), lines about encryption:")
    print("\n".join(lines[-80:]) or "(none)")
    print("--- anna's undecryptable events:", len(encrypted_stack.anna.undecryptable()))
    print("--- anna's sync errors:", encrypted_stack.anna.sync_errors[-5:])


# --- customer side -----------------------------------------------------------------------


def new_wa_id() -> str:
    return "49152" + "".join(str(secrets.randbelow(10)) for _ in range(8))


def to(wa_id: str, body: str | None = None, kind: str | None = None) -> Callable[..., bool]:
    """A stand-in request to `wa_id` (of `kind`, with text `body`)."""

    def check(doc: dict[str, Any]) -> bool:
        if doc.get("to") != wa_id:
            return False
        if kind is not None and doc.get("type") != kind:
            return False
        return body is None or doc.get("text", {}).get("body") == body

    return check


def texts_to(es: EncryptedStack, wa_id: str) -> list[str]:
    """Every text the customer got, in order."""
    return [r.json.get("text", {}).get("body", "") for r in es.wa.sent(to(wa_id, kind="text"))]


async def customer_says(es: EncryptedStack, wa_id: str, name: str, text: str) -> str:
    payload, wamid = es.wa.text_webhook(wa_id, name, text)
    status, _ = await es.wa.post_webhook(es.hub_url, payload)
    assert status == 200
    return wamid


async def open_room(es: EncryptedStack, wa_id: str, name: str, text: str) -> tuple[str, Seen]:
    """The customer writes; Anna joins the new portal and reads the (decrypted) message."""
    anna = es.anna
    await customer_says(es, wa_id, name, text)
    room_id = await anna.wait_invite(f"WhatsApp · {name}", timeout=30)
    await anna.join(room_id)
    await anna.wait_room_encrypted(room_id)
    # The first message may be older than Anna's join: scroll back if the sync left it out.
    await anna.load_history(room_id)
    seen = await anna.wait_seen(room_id, is_message(body=text), timeout=30)
    return room_id, seen


async def marker(es: EncryptedStack, room_id: str, wa_id: str) -> None:
    """Anna writes one more text and waits until the customer has it: whatever the hub would
    send for earlier events has been sent by then (one conversation is sent in order)."""
    text = f"marker {secrets.token_hex(3)}"
    await es.anna.send_text(room_id, text)
    await es.wa.wait_sent(to(wa_id, text), timeout=30)


async def room_state(es: EncryptedStack, room_id: str, kind: str) -> dict[str, Any]:
    url = f"{es.synapse.url}/_matrix/client/v3/rooms/{quote(room_id)}/state/{quote(kind)}/"
    headers = {"Authorization": f"Bearer {es.anna.client.access_token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        doc = await resp.json()
        assert resp.status == 200, doc
        return dict(doc)


def bot_notice_replying_to(es: EncryptedStack, event_id: str) -> Callable[[dict[str, Any]], bool]:
    def check(ev: dict[str, Any]) -> bool:
        rel = ev.get("content", {}).get("m.relates_to", {})
        return (
            is_message(sender=es.bot_mxid, msgtype="m.notice")(ev)
            and rel.get("m.in_reply_to", {}).get("event_id") == event_id
        )

    return check


# --- the tests ---------------------------------------------------------------------------


async def test_the_bot_device_is_cross_signed_and_to_device_push_was_checked(
    es: EncryptedStack,
) -> None:
    # The start-up check: the hub's own to-device message came back in a transaction.
    deadline = asyncio.get_running_loop().time() + 20
    while not es.hub_log_lines("pushes to-device messages to the hub"):
        assert asyncio.get_running_loop().time() < deadline, es.hub_log_lines("encryption")
        await asyncio.sleep(0.2)
    # The bot's device carries a signature of the bot's self-signing key, which the master
    # key signed: clients show it as verified by its owner.
    url = f"{es.synapse.url}/_matrix/client/v3/keys/query"
    headers = {"Authorization": f"Bearer {es.anna.client.access_token}"}
    body = {"device_keys": {es.bot_mxid: []}}
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as r:
        doc = await r.json()
    master = doc["master_keys"][es.bot_mxid]
    ssk = doc["self_signing_keys"][es.bot_mxid]
    [ssk_id] = ssk["keys"]
    [master_id] = master["keys"]
    assert master_id in ssk["signatures"][es.bot_mxid]
    device = doc["device_keys"][es.bot_mxid][BOT_DEVICE]
    assert ssk_id in device["signatures"][es.bot_mxid]


async def test_customer_message_arrives_encrypted_and_decrypts(es: EncryptedStack) -> None:
    anna = es.anna
    wa_id, name = new_wa_id(), "Verena Verschlüsselt"
    text = "Hallo! Ist die Wandfarbe lösemittelfrei? 🎨"
    room_id, seen = await open_room(es, wa_id, name, text)

    # The portal room was created encrypted.
    encryption = await room_state(es, room_id, "m.room.encryption")
    assert encryption["algorithm"] == "m.megolm.v1.aes-sha2"
    # The ghost's event travelled encrypted and decrypts to the customer's text.
    assert seen.encrypted, seen
    assert seen.event["sender"].startswith("@customer_wa_")
    assert seen.event["content"]["body"] == text
    # It was encrypted by the bot's device (the ghosts have none of their own).
    timeline = await anna.server_timeline(room_id)
    [raw] = [ev for ev in timeline if ev["event_id"] == seen.event["event_id"]]
    assert raw["type"] == "m.room.encrypted"
    assert raw["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
    assert raw["content"].get("device_id") == BOT_DEVICE
    await anna.trust_user(es.bot_mxid, "ignore")  # fetches the bot's device keys
    bot_device = anna.client.device_store[es.bot_mxid].get(BOT_DEVICE)
    assert bot_device is not None, "the bot's device has not published its keys"
    assert raw["content"]["sender_key"] == bot_device.curve25519
    # Nothing but state travels in clear, and Anna's client read everything.
    assert clear_events(timeline) == []
    assert anna.undecryptable(room_id) == []


async def test_reply_reaches_customer_exactly_once(es: EncryptedStack) -> None:
    anna = es.anna
    wa_id, name = new_wa_id(), "Rita Rückfrage"
    room_id, _ = await open_room(es, wa_id, name, "Liefern Sie nach Köln?")
    await anna.send_text(room_id, "Ja, in 2 Tagen 🚚")
    await es.wa.wait_sent(to(wa_id, "Ja, in 2 Tagen 🚚"), timeout=30)
    await marker(es, room_id, wa_id)
    assert texts_to(es, wa_id).count("Ja, in 2 Tagen 🚚") == 1
    # Anna's event itself was encrypted on the server.
    assert clear_events(await anna.server_timeline(room_id)) == []


async def test_bot_command_answer_decrypts(es: EncryptedStack) -> None:
    anna = es.anna
    wa_id, name = new_wa_id(), "Kurt Kommando"
    room_id, _ = await open_room(es, wa_id, name, "Ich brauche 2 Eimer Weiß")
    command_id = await anna.send_text(room_id, "!cart add WF-W-10 2")
    answer = await anna.wait_seen(room_id, bot_notice_replying_to(es, command_id), timeout=30)
    assert answer.encrypted, answer
    assert "2 × Wandfarbe Weiß matt 10 l" in answer.event["content"]["body"]
    # The bot's reaction to the command (✅) is encrypted too (or at least readable).
    reaction = await anna.wait_seen(
        room_id,
        lambda ev: (
            ev.get("type") == "m.reaction"
            and ev.get("content", {}).get("m.relates_to", {}).get("event_id") == command_id
        ),
    )
    assert reaction.event["content"]["m.relates_to"]["key"] == "✅"
    help_id = await anna.send_text(room_id, "!help")
    help_answer = await anna.wait_seen(room_id, bot_notice_replying_to(es, help_id), timeout=30)
    assert help_answer.encrypted and "!help" in help_answer.event["content"]["body"]
    # Commands never reach the customer.
    await marker(es, room_id, wa_id)
    assert not [t for t in texts_to(es, wa_id) if t.startswith("!")]
    assert clear_events(await anna.server_timeline(room_id)) == []
    assert anna.undecryptable(room_id) == []


async def test_encrypted_image_reaches_customer_with_same_bytes(es: EncryptedStack) -> None:
    anna = es.anna
    wa_id, name = new_wa_id(), "Bianca Bild"
    room_id, _ = await open_room(es, wa_id, name, "Zeigen Sie mir den Farbton?")
    blue = tiny_png((20, 40, 220))
    _, content = await anna.send_image(room_id, blue, "swatch.png")
    assert "url" not in content  # an encrypted attachment: only `file`
    [rec] = await es.wa.wait_sent(to(wa_id, kind="image"), timeout=30)
    media_id = rec.json["image"]["id"]
    assert es.wa.media[media_id] == (blue, "image/png")


async def test_edit_is_handled_like_in_a_clear_room(es: EncryptedStack) -> None:
    """Edits are not sent on to customers (hub/matrix/dispatcher.py outbound_values): the
    original goes once, the encrypted edit sends nothing and breaks nothing."""
    anna = es.anna
    wa_id, name = new_wa_id(), "Edith Edit"
    room_id, _ = await open_room(es, wa_id, name, "Was kostet der Eimer?")
    original = await anna.send_text(room_id, "Der Eimer kostet 12 €")
    await es.wa.wait_sent(to(wa_id, "Der Eimer kostet 12 €"), timeout=30)
    await anna.send_edit(room_id, original, "Der Eimer kostet 14 €")
    await marker(es, room_id, wa_id)
    texts = texts_to(es, wa_id)
    assert texts.count("Der Eimer kostet 12 €") == 1
    assert not [t for t in texts if "14 €" in t]
    # The hub read the edit (it did not tell the room it could not decrypt it).
    unreadable = es.hub_log_lines("not relayed to the customer")
    assert not [line for line in unreadable if room_id in line]


async def test_reaction_is_handled_like_a_clear_one(es: EncryptedStack) -> None:
    anna = es.anna
    wa_id, name = new_wa_id(), "Rainer Reaktion"
    wamid = await customer_says(es, wa_id, name, "Schöne Farbe!")
    room_id = await anna.wait_invite(f"WhatsApp · {name}", timeout=30)
    await anna.join(room_id)
    await anna.wait_room_encrypted(room_id)
    await anna.load_history(room_id)
    ghost = await anna.wait_seen(room_id, is_message(body="Schöne Farbe!"), timeout=30)
    reaction_id = await anna.react(room_id, ghost.event["event_id"], "❤️")  # encrypted
    timeline = await anna.server_timeline(room_id)
    assert [ev["type"] for ev in timeline if ev["event_id"] == reaction_id] == ["m.room.encrypted"]
    [rec] = await es.wa.wait_sent(to(wa_id, kind="reaction"), timeout=30)
    assert rec.json["reaction"] == {"message_id": wamid, "emoji": "❤️"}


@pytest.mark.parametrize("how", ["stop", "kill9"])
async def test_hub_restart_keeps_both_ways_working(es: EncryptedStack, how: str) -> None:
    anna = es.anna
    wa_id, name = new_wa_id(), f"Reinhard Restart {how}"
    room_id, _ = await open_room(es, wa_id, name, "vor dem Neustart")
    await anna.send_text(room_id, "Antwort vor dem Neustart")
    await es.wa.wait_sent(to(wa_id, "Antwort vor dem Neustart"), timeout=30)
    # Sends to the messenger are at least once (README): one in flight when the hub is killed
    # goes again. The marker, sent after the answer was stored, is the one that may be in
    # flight, so the answer's count below is exact.
    await marker(es, room_id, wa_id)

    if how == "stop":
        await es.hub.stop()
    else:
        es.hub.kill9()
    await es.hub.start()

    # Customer → Anna: the same bot device (its stored Olm/Megolm state) still encrypts.
    mark = anna.mark()
    await customer_says(es, wa_id, name, "nach dem Neustart")
    seen = await anna.wait_seen(room_id, is_message(body="nach dem Neustart"), 30, after=mark)
    assert seen.encrypted
    # Anna → customer: the hub still decrypts Anna's (maybe same, maybe new) session.
    await anna.send_text(room_id, "Antwort nach dem Neustart")
    await es.wa.wait_sent(to(wa_id, "Antwort nach dem Neustart"), timeout=30)
    await marker(es, room_id, wa_id)
    texts = texts_to(es, wa_id)
    assert texts.count("Antwort vor dem Neustart") == 1
    assert texts.count("Antwort nach dem Neustart") == 1
    assert anna.undecryptable(room_id) == []


async def test_new_adviser_device_reads_history(es: EncryptedStack) -> None:
    """Anna logs in on a second device after the conversation began: the hub shares the room
    keys of its ghosts' earlier messages with the new device (nio accepts m.room_key from the
    session's own creator; it ignores unrequested m.forwarded_room_key), so she reads them.
    The new device requests no keys and Anna's first device verifies nothing: the keys can
    only come from the hub."""
    anna = es.anna
    wa_id, name = new_wa_id(), "Hanna Historie"
    room_id, _ = await open_room(es, wa_id, name, "Frage von gestern: Glanz oder matt?")
    await customer_says(es, wa_id, name, "und noch eine zweite Frage")
    await anna.wait_seen(room_id, is_message(body="und noch eine zweite Frage"), timeout=30)

    phone: CryptoAdviser = await es.new_anna_device("anna-phone")
    try:
        await phone.wait_for(lambda: room_id in phone.client.rooms, timeout=30)
        await phone.load_history(room_id)
        got = await phone.wait_seen(
            room_id, is_message(body="Frage von gestern: Glanz oder matt?"), timeout=45
        )
        assert got.encrypted
        await phone.wait_seen(room_id, is_message(body="und noch eine zweite Frage"), timeout=15)
        # And what comes next reaches the new device as well.
        mark = phone.mark()
        await customer_says(es, wa_id, name, "heute neu")
        await phone.wait_seen(room_id, is_message(body="heute neu"), timeout=30, after=mark)
    finally:
        print("--- phone's undecryptable events:", len(phone.undecryptable(room_id)))
        await phone.close()
    await asyncio.sleep(0)


async def test_a_key_that_never_comes_is_asked_for_then_the_room_is_told(
    es: EncryptedStack,
) -> None:
    """An adviser's message whose room key never reached the hub (Synapse resends a failed
    transaction without its to-device messages): the hub asks the sender's devices for the
    key, waits `key_wait_seconds`, then tells the room once; nothing reaches the customer."""
    anna = es.anna
    wa_id, name = new_wa_id(), "Karl Keinschlüssel"
    room_id, _ = await open_room(es, wa_id, name, "Hallo, ist jemand da?")
    before = len(texts_to(es, wa_id))
    mark = anna.mark()
    since = es.hub_log_size()
    event_id = await anna.send_raw(
        room_id,
        "m.room.encrypted",
        {
            "algorithm": "m.megolm.v1.aes-sha2",
            "sender_key": anna.client.olm.account.identity_keys["curve25519"],
            "device_id": anna.client.device_id,
            "session_id": "aW52ZW50ZWQgc2Vzc2lvbiB0aGF0IG5vYm9keSBzaGFyZWQ",
            "ciphertext": "AwgAEhCq0fake0ciphertext0that0no0key0opens",
        },
    )
    notice = await anna.wait_event(
        room_id,
        lambda ev: (
            is_message(sender=es.bot_mxid, msgtype="m.notice")(ev)
            and str(ev["content"].get("body", "")).startswith("🔒")
        ),
        timeout=45,
        after=mark,
    )
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event_id
    asked = es.hub_log_lines(f"asked {anna.mxid} for the room key of {event_id}", since=since)
    assert asked, es.hub_log_lines("encryption", since=since)
    assert len(texts_to(es, wa_id)) == before
