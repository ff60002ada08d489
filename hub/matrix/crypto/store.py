"""The bot device's encryption state for nio's Olm machine, kept in the hub's database.

nio's `Olm(user_id, device_id, store)` calls its store synchronously (nio.store.MatrixStore:
load_account, save_session, ...), the hub's database is asynchronous. So `CryptoStore` holds
every item in memory (read once by `load`) and notes what changed; `flush()` writes all of
it in one unit of work (hub.db.crypto). The crypto machine flushes after every Olm operation
and before it acts on the result (answers a homeserver transaction, sends a to-device
message, hands a decrypted event on): nothing leaves the hub that the database would not
remember after a crash.

Items (table crypto_state, one row each; `key` at most 600 characters, longer ones hashed):

| namespace        | key                                 | value (JSON)                          |
| account          | device id                           | Olm account pickle, shared            |
| olm_session      | device id|curve key|session id       | Olm session pickle, times             |
| megolm_inbound   | room id|sender key|session id        | Megolm session pickle, signing key... |
| device           | user id|device id                   | public keys, name, deleted, trust     |
| key_request      | request id                          | session, room, algorithm              |
| encrypted_room   | room id                             | {}                                    |
| hub              | name                                | the hub's own items (`set_json`)      |
| secret           | name                                | AES-GCM ciphertext (`set_secret`)     |

Pickles are vodozemac's, encrypted and authenticated with a key derived from the pickle key
exactly as nio's own store does it (nio.crypto.sessions.derive_pickle_key), so they stay
readable by nio tools. Olm sessions carry this device's id in their key: they belong to its
account, and a new `encryption.device_id` must not pick up another account's sessions
(Megolm room keys, devices and trust are not tied to our account and are kept).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF
from nio.crypto import (
    DeviceStore,
    GroupSessionStore,
    InboundGroupSession,
    OlmAccount,
    OlmDevice,
    OutgoingKeyRequest,
    Session,
    SessionStore,
    TrustState,
)

from hub.db import crypto as crypto_db
from hub.errors import StartupError

if TYPE_CHECKING:
    from hub.db.database import Database


RowKey = tuple[str, str]  # (namespace, key)

ACCOUNT = "account"
OLM_SESSION = "olm_session"
MEGOLM_INBOUND = "megolm_inbound"
DEVICE = "device"
KEY_REQUEST = "key_request"
ENCRYPTED_ROOM = "encrypted_room"
HUB = "hub"
SECRET = "secret"

MAX_KEY = 600  # crypto_state.key is a String(600)
_SECRET_CONTEXT = b"commerce-hub crypto_state secret v1"


def row_key(*parts: str) -> str:
    """The key of an item from its parts. Device and room ids come from other servers and
    have no length limit we could rely on: a longer key is hashed (deterministically, the
    item's value carries its ids), so a hostile id cannot make every flush fail on
    PostgreSQL's VARCHAR(600)."""
    joined = "|".join(parts)
    if len(joined) <= MAX_KEY:
        return joined
    return "#sha256:" + hashlib.sha256(joined.encode()).hexdigest()


class CryptoStore:
    """nio's MatrixStore, duck-typed, over crypto_state. Build it with `load`."""

    def __init__(
        self,
        db: Database,
        user_id: str,
        device_id: str,
        pickle_key: str,
        rows: dict[RowKey, str],
    ) -> None:
        if not pickle_key:
            # nio accepts "", which encrypts with a key everyone knows.
            raise ValueError("a pickle key is needed")
        self.user_id = user_id
        self.device_id = device_id
        self._db = db
        self._pickle_key = pickle_key
        # Every item as stored (or to be stored); items saved from a live nio object are
        # pickled at the next flush instead (`_live`), so they carry whatever the Olm
        # operation did after it saved them: nio saves the account *before* vodozemac
        # consumes the one-time key of a new inbound session, a pickle taken at save time
        # would bring that key back after a restart.
        self._rows = rows
        self._live: dict[RowKey, Callable[[], str]] = {}
        # Items changed since the last flush -> the stamp of their latest change; a flush
        # forgets only those not changed again while it was writing.
        self._pending: dict[RowKey, int] = {}
        self._stamps = itertools.count(1)
        self._lock = asyncio.Lock()
        # Megolm sessions' first known index, to keep the better copy (save_inbound_group_
        # session).
        self._first_index: dict[RowKey, int] = {
            row: json.loads(value).get("first_index", 0)
            for row, value in rows.items()
            if row[0] == MEGOLM_INBOUND
        }

    @classmethod
    async def load(cls, db: Database, user_id: str, device_id: str, pickle_key: str) -> CryptoStore:
        """The store with everything stored so far (one read)."""
        rows = await db.read(crypto_db.load_rows)
        return cls(db, user_id, device_id, pickle_key, rows)

    # --- writing -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many items the next flush would write."""
        return len(self._pending)

    async def flush(self) -> None:
        """Write every change since the last flush in one unit of work; nothing when there
        is none. Raises when the write fails (the changes stay pending)."""
        async with self._lock:
            if not self._pending:
                return
            stamps = dict(self._pending)
            changes = {row: self._value(row) for row in stamps}
            # urgent: the crypto machine flushes before it answers the homeserver or sends
            # anything, so someone always waits for this write.
            await self._db.write(crypto_db.apply_changes, changes, urgent=True)
            for row, stamp in stamps.items():
                if self._pending.get(row) != stamp:
                    continue  # changed again during the write: the next flush writes it
                del self._pending[row]
                value = changes[row]
                if row in self._live and value is not None:
                    # Written: from now on it is a plain row (the object is nio's).
                    del self._live[row]
                    self._rows[row] = value

    def _value(self, row: RowKey) -> str | None:
        live = self._live.get(row)
        if live is not None:
            return live()
        return self._rows.get(row)

    def _set(self, row: RowKey, value: str | Callable[[], str] | None) -> None:
        self._live.pop(row, None)
        self._rows.pop(row, None)
        if callable(value):
            self._live[row] = value
        elif value is not None:
            self._rows[row] = value
        self._pending[row] = next(self._stamps)

    def _items(self, namespace: str) -> list[tuple[RowKey, dict[str, Any]]]:
        rows = [row for row in itertools.chain(self._rows, self._live) if row[0] == namespace]
        out = []
        for row in rows:
            value = self._value(row)
            if value is not None:
                out.append((row, json.loads(value)))
        return out

    def _pickle(self, obj: Any) -> str:
        return str(obj.pickle(self._pickle_key).decode())

    # --- the account ---------------------------------------------------------------------

    def load_account(self) -> OlmAccount | None:
        value = self._value((ACCOUNT, self.device_id))
        if value is None:
            return None
        item = json.loads(value)
        try:
            return OlmAccount.from_pickle(
                item["pickle"].encode(), self._pickle_key, bool(item["shared"])
            )
        except ValueError:
            # Never fall through to a new account: it would replace the stored one, and
            # the device's identity with it, for good.
            raise StartupError(
                "The stored encryption state cannot be decrypted: encryption.pickle_key "
                "(or, without it, appservice.as_token) is not the one it was stored with."
            ) from None

    def save_account(self, account: OlmAccount) -> None:
        def render() -> str:
            return json.dumps(
                {"user_id": self.user_id, "pickle": self._pickle(account), "shared": account.shared}
            )

        self._set((ACCOUNT, self.device_id), render)

    # --- Olm sessions --------------------------------------------------------------------

    def load_sessions(self) -> SessionStore:
        store = SessionStore()
        for _, item in self._items(OLM_SESSION):
            if item["device_id"] != self.device_id:
                continue  # another account's (the key is hashed: compare the value)
            session = Session.from_pickle(
                item["pickle"].encode(),
                datetime.fromisoformat(item["created"]),
                self._pickle_key,
                datetime.fromisoformat(item["used"]),  # nio's own store forgets this one
            )
            store.add(item["curve_key"], session)
        return store

    def save_session(self, curve_key: str, session: Session) -> None:
        def render() -> str:
            return json.dumps(
                {
                    "device_id": self.device_id,
                    "curve_key": curve_key,
                    "pickle": self._pickle(session),
                    "created": session.creation_time.isoformat(),
                    "used": session.use_time.isoformat(),
                }
            )

        self._set((OLM_SESSION, row_key(self.device_id, curve_key, session.id)), render)

    # --- Megolm inbound sessions ---------------------------------------------------------

    def load_inbound_group_sessions(self) -> GroupSessionStore:
        store = GroupSessionStore()
        for _, item in self._items(MEGOLM_INBOUND):
            store.add(
                InboundGroupSession.from_pickle(
                    item["pickle"].encode(),
                    item["ed25519"],
                    item["sender_key"],
                    item["room_id"],
                    self._pickle_key,
                    list(item["chain"]),
                )
            )
        return store

    def save_inbound_group_session(self, session: InboundGroupSession) -> None:
        row = (MEGOLM_INBOUND, row_key(session.room_id, session.sender_key, session.id))
        first_index = int(session.first_known_index)
        known = self._first_index.get(row)
        if known is not None and known < first_index:
            # nio saves a room key sent again even when it keeps the copy it has (Olm.
            # create_group_session ignores GroupSessionStore.add's answer): a later copy
            # starts at a later message and would cost the older messages after a restart.
            return
        self._first_index[row] = first_index

        def render() -> str:
            return json.dumps(
                {
                    "room_id": session.room_id,
                    "sender_key": session.sender_key,
                    "ed25519": session.ed25519,
                    "chain": list(session.forwarding_chain),
                    "first_index": first_index,
                    "pickle": self._pickle(session),
                }
            )

        self._set(row, render)

    # --- other users' devices and their trust --------------------------------------------

    def load_device_keys(self) -> DeviceStore:
        store = DeviceStore()
        for _, item in self._items(DEVICE):
            store.add(
                OlmDevice(
                    item["user_id"],
                    item["device_id"],
                    dict(item["keys"]),
                    display_name=item["display_name"],
                    deleted=item["deleted"],
                    trust_state=TrustState[item["trust"]],
                )
            )
        return store

    def save_device_keys(self, device_keys: dict[str, dict[str, OlmDevice]]) -> None:
        for devices in device_keys.values():
            for device in devices.values():
                # A key query never carries trust: keep what was decided before.
                self._save_device(device, self._trust(device) or device.trust_state.name)

    def _device_row(self, device: OlmDevice) -> RowKey:
        return (DEVICE, row_key(device.user_id, device.id))

    def _save_device(self, device: OlmDevice, trust: str) -> None:
        item = {
            "user_id": device.user_id,
            "device_id": device.id,
            "keys": dict(device.keys),
            "display_name": device.display_name,
            "deleted": bool(device.deleted),
            "trust": trust,
        }
        self._set(self._device_row(device), json.dumps(item))

    def _trust(self, device: OlmDevice) -> str | None:
        value = self._rows.get(self._device_row(device))
        if value is None:
            return None
        item = json.loads(value)
        # Trust is in a device's signing key, not in its id.
        if item["keys"].get("ed25519") != device.keys.get("ed25519"):
            return None
        return str(item["trust"])

    def _has(self, device: OlmDevice, state: TrustState) -> bool:
        return self._trust(device) == str(state.name)

    def _change_trust(self, device: OlmDevice, state: TrustState) -> None:
        # The stored copy of the device (if any) keeps its name and deleted flag.
        value = self._rows.get(self._device_row(device))
        if value is not None:
            item = json.loads(value)
            item["keys"], item["trust"] = dict(device.keys), state.name
            self._set(self._device_row(device), json.dumps(item))
        else:
            self._save_device(device, state.name)
        device.trust_state = state

    def _mark(self, device: OlmDevice, state: TrustState) -> bool:
        if self._trust(device) == state.name:
            return False
        self._change_trust(device, state)
        return True

    def _unmark(self, device: OlmDevice, state: TrustState) -> bool:
        if self._trust(device) != state.name:
            return False
        self._change_trust(device, TrustState.unset)
        return True

    def verify_device(self, device: OlmDevice) -> bool:
        return self._mark(device, TrustState.verified)

    def unverify_device(self, device: OlmDevice) -> bool:
        return self._unmark(device, TrustState.verified)

    def is_device_verified(self, device: OlmDevice) -> bool:
        return self._has(device, TrustState.verified)

    def blacklist_device(self, device: OlmDevice) -> bool:
        return self._mark(device, TrustState.blacklisted)

    def unblacklist_device(self, device: OlmDevice) -> bool:
        return self._unmark(device, TrustState.blacklisted)

    def is_device_blacklisted(self, device: OlmDevice) -> bool:
        return self._has(device, TrustState.blacklisted)

    def ignore_device(self, device: OlmDevice) -> bool:
        return self._mark(device, TrustState.ignored)

    def unignore_device(self, device: OlmDevice) -> bool:
        return self._unmark(device, TrustState.ignored)

    def ignore_devices(self, devices: list[OlmDevice]) -> None:
        for device in devices:
            self._mark(device, TrustState.ignored)

    def is_device_ignored(self, device: OlmDevice) -> bool:
        return self._has(device, TrustState.ignored)

    # --- room key requests we sent -------------------------------------------------------

    def load_outgoing_key_requests(self) -> dict[str, OutgoingKeyRequest]:
        return {
            item["request_id"]: OutgoingKeyRequest(
                item["request_id"], item["session_id"], item["room_id"], item["algorithm"]
            )
            for _, item in self._items(KEY_REQUEST)
        }

    def add_outgoing_key_request(self, key_request: OutgoingKeyRequest) -> None:
        row = (KEY_REQUEST, row_key(key_request.request_id))
        if row in self._rows:
            return  # nio's store keeps the first one (INSERT OR IGNORE)
        item = {
            "request_id": key_request.request_id,
            "session_id": key_request.session_id,
            "room_id": key_request.room_id,
            "algorithm": key_request.algorithm,
        }
        self._set(row, json.dumps(item))

    def remove_outgoing_key_request(self, key_request: OutgoingKeyRequest) -> None:
        row = (KEY_REQUEST, row_key(key_request.request_id))
        if row in self._rows:
            self._set(row, None)

    # --- encrypted rooms, sync token -----------------------------------------------------

    def load_encrypted_rooms(self) -> set[str]:
        return {str(item["room_id"]) for _, item in self._items(ENCRYPTED_ROOM)}

    def save_encrypted_rooms(self, rooms: Iterable[str]) -> None:
        for room_id in rooms:
            row = (ENCRYPTED_ROOM, row_key(room_id))
            if row not in self._rows:
                self._set(row, json.dumps({"room_id": room_id}))

    def delete_encrypted_room(self, room: str) -> None:
        row = (ENCRYPTED_ROOM, row_key(room))
        if row in self._rows:
            self._set(row, None)

    def save_sync_token(self, token: str) -> None:
        """An appservice does not sync: nothing to keep."""

    def load_sync_token(self) -> str | None:
        return None

    # --- the hub's own items -------------------------------------------------------------

    def get_json(self, name: str) -> Any | None:
        value = self._rows.get((HUB, _name(name)))
        return None if value is None else json.loads(value)

    def set_json(self, name: str, value: Any | None) -> None:
        """Keep a JSON value under `name` (None: forget it). Not for secrets: `set_secret`."""
        row = (HUB, _name(name))
        new = None if value is None else json.dumps(value)
        if self._rows.get(row) != new:
            self._set(row, new)

    def json_names(self, prefix: str = "") -> list[str]:
        """The names of the JSON items that start with `prefix`, sorted."""
        return sorted(key for ns, key in self._rows if ns == HUB and key.startswith(prefix))

    def get_secret(self, name: str) -> bytes | None:
        value = self._rows.get((SECRET, _name(name)))
        if value is None:
            return None
        item = json.loads(value)
        cipher = AES.new(self._secret_key(), AES.MODE_GCM, nonce=_unb64(item["nonce"]))
        cipher.update(name.encode())
        try:
            return cipher.decrypt_and_verify(_unb64(item["ciphertext"]), _unb64(item["tag"]))
        except ValueError:
            raise StartupError(
                f"The stored secret {name!r} cannot be decrypted: encryption.pickle_key "
                "(or, without it, appservice.as_token) is not the one it was stored with."
            ) from None

    def set_secret(self, name: str, value: bytes | None) -> None:
        """Keep `value` encrypted with the pickle key (AES-256-GCM; the name is bound in, so
        a ciphertext cannot pass for another secret). None: forget it."""
        row = (SECRET, _name(name))
        if value is None:
            if row in self._rows:
                self._set(row, None)
            return
        nonce = secrets.token_bytes(12)
        cipher = AES.new(self._secret_key(), AES.MODE_GCM, nonce=nonce)
        cipher.update(name.encode())
        ciphertext, tag = cipher.encrypt_and_digest(value)
        item = {"nonce": _b64(nonce), "ciphertext": _b64(ciphertext), "tag": _b64(tag)}
        self._set(row, json.dumps(item))

    def _secret_key(self) -> bytes:
        # Its own key, derived apart from the pickles' (those are sha256 of the pickle key).
        key = HKDF(self._pickle_key.encode(), 32, b"", SHA256, context=_SECRET_CONTEXT)
        assert isinstance(key, bytes)
        return key


def _name(name: str) -> str:
    # The hub's own names are kept as they are (json_names lists them), never hashed.
    if not name or len(name) > MAX_KEY:
        raise ValueError(f"an item name is 1 to {MAX_KEY} characters")
    return name


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
