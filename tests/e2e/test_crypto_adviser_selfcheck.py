"""The encrypting test client (tests/e2e/crypto_adviser.py) proven on its own: two users of a
plain local Synapse (no hub) talk in an encrypted room. If this fails, a failure of
test_encryption.py says nothing about the hub."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from nio import RoomCreateResponse

from hub.devserver.synapse import LocalSynapse, SynapseConfig, ensure_synapse_installed, free_port
from tests.e2e.crypto_adviser import CryptoAdviser, clear_events
from tests.e2e.helpers import is_message, tiny_png

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.one_engine(reason="the test client on a plain Synapse: no hub, no database"),
]

PASSWORD = "selfcheck-password-1"
ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


@dataclass
class Pair:
    synapse: LocalSynapse
    root: Path
    alice: CryptoAdviser
    bob: CryptoAdviser


@pytest.fixture(scope="module")
async def pair(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    root = tmp_path_factory.mktemp("crypto-selfcheck")
    python = await ensure_synapse_installed()
    config = SynapseConfig(
        data_dir=root / "synapse",
        server_name="selfcheck.example",
        port=free_port(),
        registration_shared_secret=secrets.token_hex(16),
        for_tests=True,
    )
    synapse = LocalSynapse(config, python)
    await synapse.start()
    alice = bob = None
    try:
        a = await synapse.register_user("alice", PASSWORD)
        b = await synapse.register_user("bob", PASSWORD)
        alice = CryptoAdviser(synapse.url, a, root / "alice-1")
        await alice.login(PASSWORD, "alice-laptop")
        bob = CryptoAdviser(synapse.url, b, root / "bob-1")
        await bob.login(PASSWORD, "bob-laptop")
        yield Pair(synapse, root, alice, bob)
    finally:
        for c in (alice, bob):
            if c is not None:
                await c.close()
        await synapse.stop()


def member_count_is(c: CryptoAdviser, room_id: str, n: int) -> bool:
    return len(c.client.rooms[room_id].users) == n


async def encrypted_room(pair: Pair) -> str:
    """Alice creates an encrypted room and invites Bob, who joins."""
    resp = await pair.alice.client.room_create(
        name=f"selfcheck {secrets.token_hex(3)}",
        invite=[pair.bob.mxid],
        initial_state=[ENCRYPTION],
    )
    assert isinstance(resp, RoomCreateResponse), resp
    room_id = str(resp.room_id)
    await pair.bob.wait_for(lambda: room_id in pair.bob.invites)
    assert room_id in await pair.bob.join_invites()
    for c in (pair.alice, pair.bob):
        await c.wait_room_encrypted(room_id)
        # Each must see the other as a member before encrypting, or the room key misses them.
        await c.wait_for(partial(member_count_is, c, room_id, 2))
    return room_id


async def test_text_image_and_edit_decrypt_both_ways(pair: Pair) -> None:
    alice, bob = pair.alice, pair.bob
    room_id = await encrypted_room(pair)

    hello = await alice.send_text(room_id, "Hallo Bob, verschlüsselt 🔐")
    got = await bob.wait_seen(room_id, is_message(body="Hallo Bob, verschlüsselt 🔐"))
    assert got.encrypted and got.event["event_id"] == hello
    assert got.event["sender"] == alice.mxid
    assert not got.verified  # nobody verified anybody: decrypts, untrusted

    await bob.send_text(room_id, "Hallo Alice")
    assert (await alice.wait_seen(room_id, is_message(body="Hallo Alice"))).encrypted

    png = tiny_png((10, 200, 10))
    _, sent = await bob.send_image(room_id, png, "green.png")
    assert "url" not in sent and sent["file"]["url"].startswith("mxc://")
    image = await alice.wait_seen(room_id, is_message(msgtype="m.image"))
    assert image.encrypted
    assert await alice.download_decrypted(image.event["content"]) == png
    # The server only holds ciphertext.
    assert await alice.download(image.event["content"]["file"]["url"]) != png

    edit_id = await alice.send_edit(room_id, hello, "Hallo Bob (bearbeitet)")
    edit = await bob.wait_seen(room_id, lambda ev: ev.get("event_id") == edit_id)
    assert edit.encrypted
    assert edit.event["content"]["m.new_content"]["body"] == "Hallo Bob (bearbeitet)"
    assert edit.event["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": hello}

    reaction_id = await bob.react(room_id, hello, "👍")
    reaction = await alice.wait_seen(room_id, lambda ev: ev.get("event_id") == reaction_id)
    assert reaction.encrypted and reaction.event["type"] == "m.reaction"
    assert reaction.event["content"]["m.relates_to"]["key"] == "👍"

    reply_id = await bob.send_reply(room_id, hello, "Antwort")
    reply = await alice.wait_seen(room_id, lambda ev: ev.get("event_id") == reply_id)
    assert reply.event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == hello

    assert alice.undecryptable(room_id) == [] and bob.undecryptable(room_id) == []
    assert clear_events(await alice.server_timeline(room_id)) == []


async def test_new_device_without_forwarded_keys_cannot_read_history(pair: Pair) -> None:
    """Observation for the report, not a requirement: Megolm keys are per device; a device
    that logs in later gets no keys for what was sent before, unless someone shares them."""
    alice, bob = pair.alice, pair.bob
    room_id = await encrypted_room(pair)
    await alice.send_text(room_id, "before Bob's second device")
    await bob.wait_seen(room_id, is_message(body="before Bob's second device"))

    bob2 = CryptoAdviser(pair.synapse.url, bob.mxid, pair.root / "bob-2")
    await bob2.login(PASSWORD, "bob-phone")
    try:
        await bob2.wait_for(lambda: bob2.pending or bob2.room_seen(room_id), timeout=10)
        readable = bob2.room_events(room_id, is_message(body="before Bob's second device"))
        print(
            "bob-2: history readable:",
            bool(readable),
            "undecryptable:",
            len(bob2.undecryptable(room_id)),
        )
        # What comes after the new device logged in is readable: Alice's client shares the
        # room key with every device it knows of when it next sends.
        mark = bob2.mark()
        await alice.send_text(room_id, "after Bob's second device")
        got = await bob2.wait_seen(
            room_id, is_message(body="after Bob's second device"), after=mark
        )
        assert got.encrypted
    finally:
        await bob2.close()
