"""The bot device's encryption state in the hub's database (hub.matrix.crypto.store over
hub.db.crypto), on SQLite and on PostgreSQL, with real nio Olm machines on vodozemac.

Alice is the hub's device (our store, in the test database); Bob is an adviser's device
(the same store class, in memory only, never flushed). They meet purely in memory: Bob
claims one of Alice's one-time keys, shares a Megolm room key with her over Olm, and
encrypts room messages; Alice is then rebuilt from the database alone and must go on.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any, cast

import pytest
import vodozemac
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF
from nio.crypto import Olm, OlmDevice, TrustState
from nio.events import MegolmEvent, OlmEvent, RoomKeyEvent, RoomMessageText

from hub.db import crypto as crypto_db
from hub.db.database import Database
from hub.errors import StartupError
from hub.matrix.crypto.store import ACCOUNT, OLM_SESSION, CryptoStore

ALICE, ALICE_DEVICE = "@commercehub:shop.example", "COMMERCEHUB"
BOB, BOB_DEVICE = "@adviser:shop.example", "ADVISERPHONE"
ROOM = "!portal:shop.example"
PICKLE_KEY = "the hub's pickle key, long enough"


def memory_store(user_id: str, device_id: str) -> CryptoStore:
    # Never flushed, so it needs no database.
    return CryptoStore(cast(Database, None), user_id, device_id, "bob's own pickle key", {})


def device_of(olm: Olm) -> OlmDevice:
    return OlmDevice(olm.user_id, olm.device_id, dict(olm.account.identity_keys))


def meet(olm: Olm, other: Olm) -> OlmDevice:
    """`olm` learns `other`'s device (what a key query does) and verifies it."""
    device = device_of(other)
    olm.device_store.add(device)
    olm.store.save_device_keys({device.user_id: {device.id: device}})
    assert olm.verify_device(device)
    return device


def one_time_key(olm: Olm) -> str:
    olm.account.generate_one_time_keys(1)
    key = next(iter(olm.account.one_time_keys["curve25519"].values()))
    olm.account.mark_keys_as_published()  # as after a keys/upload
    olm.save_account()
    return str(key)


def share_room_key(sender: Olm, recipient: Olm) -> tuple[OlmEvent, dict[str, Any]]:
    """The sender's Megolm room key as the to-device event the recipient's homeserver would
    push, and the recipient's Olm message in it (type 0: pre-key, 1: normal; body)."""
    _, to_device = sender.share_group_session(ROOM, [recipient.user_id])
    sender.outbound_group_sessions[ROOM].shared = True  # the to-device send succeeded
    content = to_device["messages"][recipient.user_id][recipient.device_id]
    own = content["ciphertext"][recipient.account.identity_keys["curve25519"]]
    event = {"sender": sender.user_id, "type": "m.room.encrypted", "content": content}
    return OlmEvent.from_dict(event), own


def room_message(sender: Olm, body: str, event_id: str) -> MegolmEvent:
    content = sender.group_encrypt(
        ROOM, {"type": "m.room.message", "content": {"msgtype": "m.text", "body": body}}
    )
    event = {
        "type": "m.room.encrypted",
        "sender": sender.user_id,
        "event_id": event_id,
        "origin_server_ts": 1_700_000_000_000,
        "room_id": ROOM,
        "content": content,
    }
    return MegolmEvent.from_dict(event)


def decrypted_body(olm: Olm, event: MegolmEvent) -> str:
    plain = olm.decrypt_megolm_event(event, ROOM)
    assert isinstance(plain, RoomMessageText)
    return str(plain.body)


def count_writes(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    write = db.write

    async def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await write(fn, *args, **kwargs)

    monkeypatch.setattr(db, "write", counting)
    return calls


def unpickle_account(pickle: str, pickle_key: str) -> dict[str, Any]:
    """Decrypt a vodozemac account pickle by hand (HKDF-SHA256 "Pickle" -> AES-256-CBC key,
    HMAC key, IV; an 8-byte MAC at the end), so the test can see the private keys inside
    and look for them in the table."""
    raw = base64.b64decode(pickle + "=" * (-len(pickle) % 4))
    expanded = HKDF(
        hashlib.sha256(pickle_key.encode()).digest(), 80, b"\x00", SHA256, context=b"Pickle"
    )
    aes_key, iv = expanded[:32], expanded[64:80]
    plain = AES.new(aes_key, AES.MODE_CBC, iv=iv).decrypt(raw[:-8])
    return cast(dict[str, Any], json.loads(plain[: -plain[-1]]))


async def test_olm_and_megolm_state_survive_a_new_store_and_machine(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice_store = await CryptoStore.load(db, ALICE, ALICE_DEVICE, PICKLE_KEY)
    alice = Olm(ALICE, ALICE_DEVICE, alice_store)
    bob = Olm(BOB, BOB_DEVICE, memory_store(BOB, BOB_DEVICE))
    bob_device = meet(alice, bob)
    meet(bob, alice)
    bob_curve = bob.account.identity_keys["curve25519"]

    # Bob claims Alice's one-time key and sends her his room key in a pre-key message.
    bob.create_session(one_time_key(alice), alice.account.identity_keys["curve25519"])
    key_event, first = share_room_key(bob, alice)
    assert first["type"] == 0
    assert isinstance(alice.decrypt_event(key_event), RoomKeyEvent)
    assert decrypted_body(alice, room_message(bob, "first", "$1")) == "first"
    # Alice answers over the same Olm session, so Bob's next Olm messages are normal ones,
    # which only that session (with its ratchet as stored) can decrypt.
    alice_key_event, _ = share_room_key(alice, bob)
    assert isinstance(bob.decrypt_event(alice_key_event), RoomKeyEvent)

    carol = OlmDevice(
        "@carol:elsewhere.example", "CAROL", {"ed25519": "c" * 43, "curve25519": "d" * 43}
    )
    alice.device_store.add(carol)
    alice_store.save_device_keys({carol.user_id: {carol.id: carol}})
    assert alice.blacklist_device(carol)
    # A later key query brings Bob's device again (a fresh object, trust unset): the trust
    # Alice decided stays.
    alice_store.save_device_keys({BOB: {BOB_DEVICE: device_of(bob)}})
    alice_store.save_encrypted_rooms([ROOM, "!gone:shop.example"])
    alice_store.delete_encrypted_room("!gone:shop.example")
    alice_store.set_json("device_created", True)
    alice_store.set_secret("cross_signing_seed", b"\x07" * 32)
    await alice_store.flush()
    assert alice_store.pending == 0

    # Everything from the database alone: a new store and a new machine.
    store = await CryptoStore.load(db, ALICE, ALICE_DEVICE, PICKLE_KEY)
    again = Olm(ALICE, ALICE_DEVICE, store)
    assert again.account.identity_keys == alice.account.identity_keys
    assert [s.id for s in again.session_store[bob_curve]] == [
        s.id for s in alice.session_store[bob_curve]
    ]
    assert decrypted_body(again, room_message(bob, "second", "$2")) == "second"

    # Bob's new room key in a normal Olm message: decrypted by the stored session, and no
    # new session made for it.
    bob.rotate_outbound_group_session(ROOM)
    key_event, olm_message = share_room_key(bob, again)
    assert olm_message["type"] == 1
    assert isinstance(again.decrypt_event(key_event), RoomKeyEvent)
    assert len(again.session_store[bob_curve]) == 1
    assert decrypted_body(again, room_message(bob, "third", "$3")) == "third"

    # The one-time key Bob used is gone from the stored account: nio saves the account
    # before vodozemac consumes the key, the store pickles it at the flush.
    pre_key = vodozemac.PreKeyMessage.from_base64(first["body"])
    with pytest.raises(vodozemac.SessionCreationException):
        again.account.create_inbound_session(bob_curve, pre_key)

    # Trust, rooms and the hub's own items.
    assert again.device_store[BOB][BOB_DEVICE].trust_state is TrustState.verified
    assert again.is_device_verified(bob_device)
    assert again.device_store[carol.user_id][carol.id].trust_state is TrustState.blacklisted
    assert again.is_device_blacklisted(carol)
    assert not again.is_device_verified(carol)
    assert store.load_encrypted_rooms() == {ROOM}
    assert store.get_json("device_created") is True
    assert store.get_secret("cross_signing_seed") == b"\x07" * 32

    # Written what the decryptions changed; a second flush has nothing to write.
    writes = count_writes(db, monkeypatch)
    await store.flush()
    assert writes == [crypto_db.apply_changes]
    await store.flush()
    assert writes == [crypto_db.apply_changes]


async def test_no_key_material_in_the_clear(db: Database) -> None:
    store = await CryptoStore.load(db, ALICE, ALICE_DEVICE, PICKLE_KEY)
    alice = Olm(ALICE, ALICE_DEVICE, store)
    bob = Olm(BOB, BOB_DEVICE, memory_store(BOB, BOB_DEVICE))
    meet(alice, bob)
    meet(bob, alice)
    bob.create_session(one_time_key(alice), alice.account.identity_keys["curve25519"])
    key_event, _ = share_room_key(bob, alice)
    room_key = alice.decrypt_event(key_event)
    assert isinstance(room_key, RoomKeyEvent)
    store.set_secret("cross_signing_seed", b"\x07" * 32)
    await store.flush()

    rows = await db.read(crypto_db.load_rows)
    account = json.loads(rows[(ACCOUNT, ALICE_DEVICE)])
    assert set(account) == {"user_id", "pickle", "shared"}
    # The pickle holds the account's private Curve25519 key (checked: it makes the public
    # identity key); none of its spellings is anywhere in the table.
    private = bytes(unpickle_account(account["pickle"], PICKLE_KEY)["diffie_hellman_key"])
    public = vodozemac.Curve25519SecretKey.from_bytes(private).public_key().to_base64()
    assert public == alice.account.identity_keys["curve25519"]
    b64 = base64.b64encode(private).decode()
    spellings = [b64, b64.rstrip("="), private.hex(), json.dumps(list(private))[1:-1]]
    # ... nor the Megolm session key Bob sent, nor the secret.
    spellings.append(bob.outbound_group_sessions[ROOM].session_key[8:48])  # its ratchet
    spellings.append(base64.b64encode(b"\x07" * 32).decode().rstrip("="))
    for value in rows.values():
        for spelling in spellings:
            assert spelling not in value
    assert any(ns == OLM_SESSION for ns, _ in rows)


async def test_a_change_during_a_flush_stays_pending(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await CryptoStore.load(db, ALICE, ALICE_DEVICE, PICKLE_KEY)
    store.set_json("a", 1)
    store.set_json("b", 1)
    write = db.write

    async def write_while_changing(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        store.set_json("a", 2)  # the row being written changes again
        store.set_json("c", 1)  # and a new one appears
        return await write(fn, *args, **kwargs)

    monkeypatch.setattr(db, "write", write_while_changing)
    await store.flush()
    assert store.pending == 2
    assert await stored_json(db) == {"a": 1, "b": 1}
    monkeypatch.setattr(db, "write", write)
    await store.flush()
    assert store.pending == 0
    assert await stored_json(db) == {"a": 2, "b": 1, "c": 1}

    store.set_json("b", None)
    await store.flush()
    assert await stored_json(db) == {"a": 2, "c": 1}


async def test_a_failed_flush_keeps_everything_pending(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await CryptoStore.load(db, ALICE, ALICE_DEVICE, PICKLE_KEY)
    Olm(ALICE, ALICE_DEVICE, store)  # a new account, saved
    store.set_json("a", 1)
    write = db.write

    async def failing(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(db, "write", failing)
    with pytest.raises(ConnectionError):
        await store.flush()
    assert store.pending == 2
    monkeypatch.setattr(db, "write", write)
    await store.flush()
    rows = await db.read(crypto_db.load_rows)
    assert set(rows) == {(ACCOUNT, ALICE_DEVICE), ("hub", "a")}


async def test_a_wrong_pickle_key_never_makes_a_new_account(db: Database) -> None:
    store = await CryptoStore.load(db, ALICE, ALICE_DEVICE, PICKLE_KEY)
    Olm(ALICE, ALICE_DEVICE, store)
    await store.flush()
    stored = await db.read(crypto_db.load_rows)

    other = await CryptoStore.load(db, ALICE, ALICE_DEVICE, "not the key it was stored with")
    with pytest.raises(StartupError):
        Olm(ALICE, ALICE_DEVICE, other)
    assert other.pending == 0
    assert await db.read(crypto_db.load_rows) == stored


async def stored_json(db: Database) -> dict[str, Any]:
    rows = await db.read(crypto_db.load_rows)
    return {key: json.loads(value) for (ns, key), value in rows.items() if ns == "hub"}
