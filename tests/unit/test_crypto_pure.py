"""The pure parts of end-to-bridge encryption: cross-signing bodies and their signatures,
encrypted files in the events the ghosts send and in the rows advisers' files become."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa
from nio.crypto.attachments import encrypt_attachment

from hub.errors import ExternalError
from hub.matrix.crypto.cross_signing import (
    SigningKey,
    canonical_json,
    device_signature_upload,
    device_signing_upload,
)
from hub.matrix.crypto.media import decrypt_file
from hub.matrix.dispatcher import outbound_values
from hub.matrix.render import message_contents

USER = "@shopbot:shop.example"


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _verifies(public: str, value: dict[str, Any], signature: str) -> bool:
    key: ECC.EccKey = eddsa.import_public_key(_unb64(public))
    try:
        eddsa.new(key, "rfc8032").verify(canonical_json(value), _unb64(signature))
    except ValueError:
        return False
    return True


def test_canonical_json_leaves_out_signatures_and_unsigned() -> None:
    value = {"b": 1, "a": "ä", "signatures": {"x": 1}, "unsigned": {"y": 2}}
    assert canonical_json(value) == '{"a":"ä","b":1}'.encode()


def test_self_signing_key_is_signed_by_the_master_key() -> None:
    master, self_signing = SigningKey.generate(), SigningKey.generate()
    body = device_signing_upload(USER, master, self_signing)
    assert body["master_key"]["keys"] == {f"ed25519:{master.public}": master.public}
    assert body["master_key"]["usage"] == ["master"]
    ssk = body["self_signing_key"]
    assert ssk["usage"] == ["self_signing"]
    signature = ssk["signatures"][USER][f"ed25519:{master.public}"]
    assert _verifies(master.public, ssk, signature)
    # Another key's signature does not verify: the check above means something.
    assert not _verifies(self_signing.public, ssk, signature)


def test_device_is_signed_by_the_self_signing_key() -> None:
    self_signing = SigningKey.generate()
    device = {
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "device_id": "COMMERCEHUB",
        "user_id": USER,
        "keys": {"ed25519:COMMERCEHUB": "abc", "curve25519:COMMERCEHUB": "def"},
        "signatures": {USER: {"ed25519:COMMERCEHUB": "device's own"}},
    }
    body = device_signature_upload(USER, "COMMERCEHUB", device, self_signing)
    signed = body[USER]["COMMERCEHUB"]
    signature = signed["signatures"][USER][f"ed25519:{self_signing.public}"]
    assert _verifies(self_signing.public, signed, signature)
    assert {k: v for k, v in signed.items() if k != "signatures"} == {
        k: v for k, v in device.items() if k != "signatures"
    }


def test_a_ghosts_file_in_an_encrypted_room_carries_file_not_url() -> None:
    media = {"filename": "wand.jpg", "mimetype": "image/jpeg", "size": 3}
    file = {"url": "mxc://shop.example/enc", "key": {"k": "K"}, "iv": "I", "hashes": {}}
    [content] = message_contents("image", None, media, None, "mxc://shop.example/enc", file)
    assert "url" not in content
    assert content["file"] == file
    assert content["info"] == {"mimetype": "image/jpeg", "size": 3}
    [clear] = message_contents("image", None, media, None, "mxc://shop.example/clear")
    assert clear["url"] == "mxc://shop.example/clear" and "file" not in clear


class _Conversation:
    id = 7


def test_an_advisers_encrypted_file_becomes_a_media_row_with_its_key() -> None:
    ciphertext, keys = encrypt_attachment(b"\x89PNG fake picture")
    event = {
        "event_id": "$e",
        "sender": "@anna:shop.example",
        "room_id": "!r:shop.example",
        "type": "m.room.message",
        "content": {
            "msgtype": "m.image",
            "body": "farbe.png",
            "info": {"mimetype": "image/png", "size": 18},
            "file": {"url": "mxc://shop.example/xyz", **keys},
        },
    }
    values = outbound_values(event, _Conversation())  # type: ignore[arg-type]
    assert values is not None
    media = values["media"]
    assert media["mxc"] == "mxc://shop.example/xyz"
    assert media["mimetype"] == "image/png"
    assert decrypt_file(ciphertext, media["file"]) == b"\x89PNG fake picture"


def test_a_file_without_its_key_is_not_relayed() -> None:
    event = {
        "event_id": "$e",
        "sender": "@anna:shop.example",
        "room_id": "!r:shop.example",
        "type": "m.room.message",
        "content": {"msgtype": "m.image", "body": "x.png", "file": {"url": "mxc://s/x"}},
    }
    assert outbound_values(event, _Conversation()) is None  # type: ignore[arg-type]


def test_a_forged_file_is_a_permanent_error() -> None:
    ciphertext, keys = encrypt_attachment(b"genuine")
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    with pytest.raises(ExternalError) as caught:
        decrypt_file(tampered, {"url": "mxc://s/x", **keys})
    assert caught.value.permanent
