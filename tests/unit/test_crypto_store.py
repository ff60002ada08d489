"""hub.matrix.crypto.store without a database: nio's store semantics the Olm machine relies
on, and the hub's own rules (trust pinned to a signing key, the better Megolm copy kept,
long ids hashed, secrets encrypted and bound to their name)."""

from __future__ import annotations

import json
from typing import cast

import pytest
from nio.crypto import InboundGroupSession, OlmDevice, OutboundGroupSession, TrustState
from nio.crypto.key_request import OutgoingKeyRequest

from hub.db.database import Database
from hub.errors import StartupError
from hub.matrix.crypto.store import MAX_KEY, MEGOLM_INBOUND, SECRET, CryptoStore, row_key

KEY = "a pickle key for the unit tests"


def store(rows: dict[tuple[str, str], str] | None = None, key: str = KEY) -> CryptoStore:
    return CryptoStore(cast(Database, None), "@hub:x", "HUBDEVICE", key, rows or {})


def device(ed25519: str = "E" * 43) -> OlmDevice:
    return OlmDevice("@a:x", "PHONE", {"ed25519": ed25519, "curve25519": "C" * 43})


def test_an_empty_pickle_key_is_refused() -> None:
    with pytest.raises(ValueError):
        store(key="")


def test_trust_follows_nio_semantics_and_is_pinned_to_the_signing_key() -> None:
    s, d = store(), device()
    s.save_device_keys({d.user_id: {d.id: d}})
    assert s.verify_device(d)
    assert not s.verify_device(d)  # already verified
    assert d.trust_state is TrustState.verified and s.is_device_verified(d)
    assert s.blacklist_device(d)  # one state at a time
    assert not s.is_device_verified(d) and s.is_device_blacklisted(d)
    assert not s.unverify_device(d)
    assert s.unblacklist_device(d) and d.trust_state is TrustState.unset
    s.ignore_devices([d])
    assert s.is_device_ignored(d) and s.unignore_device(d) and not s.unignore_device(d)

    assert s.verify_device(d)
    # The same device id with another signing key is not the device that was verified.
    assert not s.is_device_verified(device("F" * 43))
    # A key query saving the device again keeps its trust.
    s.save_device_keys({d.user_id: {d.id: device()}})
    assert s.load_device_keys()[d.user_id][d.id].trust_state is TrustState.verified


def test_a_megolm_session_is_never_replaced_by_a_later_copy() -> None:
    outbound = OutboundGroupSession()
    outbound.shared = True
    early = InboundGroupSession(outbound.session_key, "S" * 43, "K" * 43, "!r:x")
    outbound.encrypt("one message")
    late = InboundGroupSession(outbound.session_key, "S" * 43, "K" * 43, "!r:x")
    assert (early.first_known_index, late.first_known_index) == (0, 1)

    s = store()
    s.save_inbound_group_session(early)
    s.save_inbound_group_session(late)
    assert s.load_inbound_group_sessions().get("!r:x", "K" * 43, early.id).first_known_index == 0

    s = store()
    s.save_inbound_group_session(late)
    s.save_inbound_group_session(early)  # a better copy replaces a worse one
    assert s.load_inbound_group_sessions().get("!r:x", "K" * 43, early.id).first_known_index == 0
    row = next(iter(s._live))
    assert row[0] == MEGOLM_INBOUND and s.pending == 1


def test_long_ids_are_hashed_to_fit_the_key_column() -> None:
    assert row_key("a", "b") == "a|b"
    long = row_key("!" + "r" * 700 + ":x", "k")
    assert len(long) <= MAX_KEY and long == row_key("!" + "r" * 700 + ":x", "k")
    s = store()
    s.save_encrypted_rooms(["!" + "r" * 700 + ":x"])
    assert s.load_encrypted_rooms() == {"!" + "r" * 700 + ":x"}


def test_outgoing_key_requests_and_rooms() -> None:
    s = store()
    request = OutgoingKeyRequest("req1", "sess", "!r:x", "m.megolm.v1.aes-sha2")
    s.add_outgoing_key_request(request)
    s.add_outgoing_key_request(OutgoingKeyRequest("req1", "other", "!r:x", "x"))  # kept first
    assert s.load_outgoing_key_requests() == {"req1": request}
    s.remove_outgoing_key_request(request)
    assert s.load_outgoing_key_requests() == {}
    s.save_encrypted_rooms({"!a:x", "!b:x"})
    s.delete_encrypted_room("!a:x")
    assert s.load_encrypted_rooms() == {"!b:x"}
    s.save_sync_token("s1")
    assert s.load_sync_token() is None


def test_json_items_change_only_when_their_value_does() -> None:
    s = store()
    s.set_json("n", {"a": 1})
    assert s.pending == 1 and s.get_json("n") == {"a": 1}
    s._pending.clear()
    s.set_json("n", {"a": 1})
    assert s.pending == 0
    s.set_json("n", None)
    assert s.get_json("n") is None and s.pending == 1
    s.set_json("room:!a:x", [1])
    s.set_json("room:!b:x", [2])
    s.set_json("other", 3)
    assert s.json_names("room:") == ["room:!a:x", "room:!b:x"]
    with pytest.raises(ValueError):
        s.set_json("n" * (MAX_KEY + 1), 1)


def test_secrets_are_encrypted_and_bound_to_their_name() -> None:
    s = store()
    s.set_secret("seed", b"\x01" * 32)
    stored = s._rows[(SECRET, "seed")]
    assert "AQEBAQEB" not in stored and set(json.loads(stored)) == {"nonce", "ciphertext", "tag"}
    assert s.get_secret("seed") == b"\x01" * 32
    assert store(dict(s._rows)).get_secret("seed") == b"\x01" * 32

    with pytest.raises(StartupError):
        store(dict(s._rows), key="another pickle key, wrong").get_secret("seed")
    moved = dict(s._rows)
    moved[(SECRET, "other")] = moved[(SECRET, "seed")]
    with pytest.raises(StartupError):
        store(moved).get_secret("other")
    s.set_secret("seed", None)
    assert s.get_secret("seed") is None
