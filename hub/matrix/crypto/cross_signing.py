"""Cross-signing of the bot's device: a master key and a self-signing key that signs the
device, so advisers' clients show the device as verified by its owner (the bot) instead of
an unknown device. Pure: builds the bodies of /keys/device_signing/upload and
/keys/signatures/upload from the keys' seeds; the machine sends them.

Ed25519 comes from pycryptodome (a dependency of matrix-nio already): the vodozemac
bindings have no standalone signing keys.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from typing import Any

from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa


def _b64(data: bytes) -> str:
    """Matrix's unpadded base64."""
    return base64.b64encode(data).decode().rstrip("=")


def canonical_json(value: dict[str, Any]) -> bytes:
    """The signed form of a JSON object: without `signatures` and `unsigned`, keys sorted,
    no blanks, UTF-8 (Matrix spec, "Signing JSON")."""
    signed = {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class SigningKey:
    seed: bytes  # 32 bytes: the private key

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(secrets.token_bytes(32))

    @property
    def public(self) -> str:
        key = eddsa.import_private_key(self.seed)
        return _b64(key.public_key().export_key(format="raw"))

    def sign(self, value: dict[str, Any]) -> str:
        key: ECC.EccKey = eddsa.import_private_key(self.seed)
        return _b64(eddsa.new(key, "rfc8032").sign(canonical_json(value)))

    def add_signature(self, value: dict[str, Any], user_id: str) -> dict[str, Any]:
        """`value` with this key's signature added (existing signatures kept)."""
        signature = self.sign(value)
        signatures = {u: dict(s) for u, s in value.get("signatures", {}).items()}
        signatures.setdefault(user_id, {})[f"ed25519:{self.public}"] = signature
        return {**value, "signatures": signatures}


def device_signing_upload(
    user_id: str, master: SigningKey, self_signing: SigningKey
) -> dict[str, Any]:
    """The body of POST /keys/device_signing/upload (no user-signing key: the bot verifies
    nobody)."""
    master_key = {
        "user_id": user_id,
        "usage": ["master"],
        "keys": {f"ed25519:{master.public}": master.public},
    }
    self_key = {
        "user_id": user_id,
        "usage": ["self_signing"],
        "keys": {f"ed25519:{self_signing.public}": self_signing.public},
    }
    return {"master_key": master_key, "self_signing_key": master.add_signature(self_key, user_id)}


def device_signature_upload(
    user_id: str, device_id: str, device_keys: dict[str, Any], self_signing: SigningKey
) -> dict[str, Any]:
    """The body of POST /keys/signatures/upload: the device's keys signed by the
    self-signing key."""
    signature = self_signing.sign(device_keys)
    signed = {
        **{k: v for k, v in device_keys.items() if k not in ("signatures", "unsigned")},
        "signatures": {user_id: {f"ed25519:{self_signing.public}": signature}},
    }
    return {user_id: {device_id: signed}}
