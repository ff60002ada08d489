"""The bot's device in encrypted portal rooms: keys, room keys, encrypting and decrypting.

Appservice mode, as the mautrix bridges do it: the device is created with the as_token
(MSC4190 `PUT /devices/{id}`) and used through device masquerading (`?device_id=`); the
homeserver pushes to-device messages, one-time key counts and device list changes in its
transactions (MSC2409, MSC3202), handled here before the transaction is acknowledged. nio's
Olm machine (on vodozemac) does the cryptography; its state lives in the hub's database
(hub.matrix.crypto.store), flushed before anything acts on it.

The bot's device encrypts what the bot and every ghost send (ghosts have no devices of
their own: a device per customer would pile up thousands of devices on the homeserver).
One lock serialises every use of the Olm machine: it is not safe for concurrent use, and
its operations take microseconds next to the HTTP requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote

from nio.crypto import Olm, OlmDevice
from nio.events import (
    BadEvent,
    MegolmEvent,
    RoomKeyRequest,
    ToDeviceEvent,
    UnknownBadEvent,
)
from nio.exceptions import EncryptionError
from nio.responses import KeysClaimResponse, KeysQueryResponse, KeysUploadResponse

from hub.errors import ExternalError
from hub.matrix.client import MatrixClient, MatrixError, _path
from hub.matrix.crypto import cross_signing
from hub.matrix.crypto.store import CryptoStore
from hub.matrix.decryption import RoomKeyMissing, Undecryptable

log = logging.getLogger(__name__)

MEGOLM = "m.megolm.v1.aes-sha2"
_TO_DEVICE_KEYS = ("de.sorunome.msc2409.to_device", "to_device")
_OTK_KEYS = (
    "org.matrix.msc3202.device_one_time_keys_count",
    "org.matrix.msc3202.device_one_time_key_counts",
    "device_one_time_keys_count",
)
_DEVICE_LISTS_KEYS = ("org.matrix.msc3202.device_lists", "device_lists")
_PING = "org.matrix.commerce_hub.ping"  # the hub's own to-device message to itself
_CHUNK = 20  # to-device messages per request, as nio sends them
# The seeds of the bot's cross-signing keys and the room keys the bot created, in the store.
_CROSS_SIGNING = "cross_signing"
# Per room, the sessions the bot started ([[session id, unix time], ...]) and, per session,
# its key at the first message (a secret): what a late adviser's device needs.
_OWN_ROOMS_PREFIX = "own_sessions|"


class CryptoMachine:
    def __init__(
        self,
        matrix: MatrixClient,
        store: CryptoStore,
        olm: Olm,
        *,
        bot_mxid: str,
        device_id: str,
        advisers: Iterable[str],
        share_history: bool,
        history_days: float = 7,
        is_portal: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """`is_portal`: whether a room is a customer's portal (key requests are answered
        there only); None: every room the hub holds keys of."""
        self.matrix = matrix
        self.is_portal = is_portal
        self.history_days = history_days
        self.store = store
        self.olm = olm
        self.bot_mxid = bot_mxid
        self.device_id = device_id
        self.advisers = frozenset(advisers)
        self.share_history = share_history
        self._lock = asyncio.Lock()
        # room id -> joined members; dropped when a membership event of the room arrives.
        self._members: dict[str, set[str]] = {}
        self._encrypted: dict[str, bool] = {}
        self._ping: tuple[str, asyncio.Event] | None = None  # see check_to_device
        self._requested: set[str] = set()  # Megolm sessions whose key the hub asked for
        self._member_changes: dict[str, int] = {}  # room id -> membership events seen

    # -- start ---------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        matrix: MatrixClient,
        store: CryptoStore,
        *,
        bot_mxid: str,
        device_id: str,
        advisers: Iterable[str],
        share_history: bool,
        history_days: float,
        display_name: str,
        is_portal: Callable[[str], Awaitable[bool]] | None = None,
    ) -> CryptoMachine:
        """Make sure the device exists with our keys on the homeserver, cross-signed."""
        fresh = store.load_account() is None
        if fresh:
            # A device left from an account we no longer have (a lost database) would keep
            # its old identity keys on the homeserver: replace it.
            try:
                await matrix.request("DELETE", _path("devices", device_id), {})
            except MatrixError as exc:
                if exc.status != 404:
                    raise
        await matrix.request("PUT", _path("devices", device_id), {"display_name": display_name})
        olm = Olm(bot_mxid, device_id, store)
        machine = cls(
            matrix,
            store,
            olm,
            bot_mxid=bot_mxid,
            device_id=device_id,
            advisers=advisers,
            share_history=share_history,
            history_days=history_days,
            is_portal=is_portal,
        )
        for room_id in store.load_encrypted_rooms():
            machine._encrypted[room_id] = True
        async with machine._lock:
            if not olm.account.shared:
                await machine._upload_keys()
            await machine._cross_sign()
            await store.flush()
        log.info(
            "encryption: device %s of %s ready (identity key %s)",
            device_id,
            bot_mxid,
            olm.account.identity_keys["ed25519"],
        )
        return machine

    def _device_query(self) -> str:
        return f"device_id={quote(self.device_id, safe='')}"

    async def _as_device(self, method: str, path: str, body: Any) -> dict[str, Any]:
        """A request as the bot's device (appservice device masquerading)."""
        sep = "&" if "?" in path else "?"
        # user_id named although it is the sender: Synapse 1.163 fails (500) to look up the
        # device of an appservice request that masquerades a device without it.
        return await self.matrix.request(
            method, f"{path}{sep}{self._device_query()}", body, user_id=self.bot_mxid
        )

    async def _upload_keys(self) -> None:
        body = self.olm.share_keys()
        doc = await self._as_device("POST", "/_matrix/client/v3/keys/upload", body)
        self.olm.handle_response(KeysUploadResponse.from_dict(doc))
        log.info(
            "encryption: uploaded keys (%s one-time keys on the server)",
            self.olm.uploaded_key_count,
        )

    async def _cross_sign(self) -> None:
        """The bot's master and self-signing keys (made and uploaded once; their seeds kept
        as secrets), and the device signed by the self-signing key. A new `device_id` is
        signed by the same keys: clients see a new device of the same bot, not a new bot."""
        done = self.store.get_json(_CROSS_SIGNING)
        if isinstance(done, dict) and done.get("device") == self.device_id:
            return
        master_seed = self.store.get_secret(f"{_CROSS_SIGNING}|master")
        ssk_seed = self.store.get_secret(f"{_CROSS_SIGNING}|self_signing")
        if master_seed and ssk_seed:
            master = cross_signing.SigningKey(master_seed)
            self_signing = cross_signing.SigningKey(ssk_seed)
        else:
            master = cross_signing.SigningKey.generate()
            self_signing = cross_signing.SigningKey.generate()
            await self.matrix.request(
                "POST",
                "/_matrix/client/v3/keys/device_signing/upload",
                cross_signing.device_signing_upload(self.bot_mxid, master, self_signing),
            )
            self.store.set_secret(f"{_CROSS_SIGNING}|master", master.seed)
            self.store.set_secret(f"{_CROSS_SIGNING}|self_signing", self_signing.seed)
        await self.matrix.request(
            "POST",
            "/_matrix/client/v3/keys/signatures/upload",
            cross_signing.device_signature_upload(
                self.bot_mxid, self.device_id, self._device_keys(), self_signing
            ),
        )
        self.store.set_json(
            _CROSS_SIGNING,
            {
                "device": self.device_id,
                "master": master.public,
                "self_signing": self_signing.public,
            },
        )
        log.info("encryption: device %s cross-signed by the bot", self.device_id)

    def _device_keys(self) -> dict[str, Any]:
        """The device's keys as uploaded (the object the self-signing key signs)."""
        keys = self.olm.account.identity_keys
        value: dict[str, Any] = {
            "algorithms": list(self.olm._algorithms),
            "device_id": self.device_id,
            "user_id": self.bot_mxid,
            "keys": {
                f"curve25519:{self.device_id}": keys["curve25519"],
                f"ed25519:{self.device_id}": keys["ed25519"],
            },
        }
        value["signatures"] = {
            self.bot_mxid: {f"ed25519:{self.device_id}": self.olm.sign_json(value)}
        }
        return value

    # -- what the homeserver pushes --------------------------------------------------------

    async def transaction(self, body: dict[str, Any]) -> list[tuple[str | None, str, str]]:
        """The encryption parts of an appservice transaction, handled before it is
        acknowledged. Returns what the caller queues as history sharing: (room id, adviser,
        a key naming the cause) of advisers who joined an encrypted portal, and (None,
        adviser, key) of advisers whose devices changed (a new device reads the history of
        their recent rooms)."""
        to_device = _first_list(body, _TO_DEVICE_KEYS)
        counts = _first_dict(body, _OTK_KEYS)
        lists = _first_dict(body, _DEVICE_LISTS_KEYS)
        joined = self._memberships(body.get("events"))
        if not (to_device or counts or lists or joined):
            return []
        async with self._lock:
            for raw in to_device:
                if not isinstance(raw, dict):
                    continue
                if raw.get("to_user_id") != self.bot_mxid:
                    continue
                if raw.get("to_device_id") not in (self.device_id, None):
                    continue
                await self._to_device(raw)
            ours = counts.get(self.bot_mxid) if counts else None
            mine = ours.get(self.device_id) if isinstance(ours, dict) else None
            if isinstance(mine, dict) and isinstance(mine.get("signed_curve25519"), int):
                self.olm.uploaded_key_count = mine["signed_curve25519"]
                if self.olm.should_upload_keys:
                    await self._upload_keys()
            changed = lists.get("changed") if lists else None
            users = (
                {u for u in changed if isinstance(u, str)} if isinstance(changed, list) else set()
            )
            self.olm.add_changed_users(users)
            await self.store.flush()
        if not self.share_history:
            return []
        # A device list change has no id of its own; sharing twice sends nothing twice.
        devices: list[tuple[str | None, str, str]] = [
            (None, user, f"new-devices:{user}:{uuid.uuid4().hex}")
            for user in sorted(users & self.advisers)
        ]
        return [*joined, *devices]

    def _memberships(self, events: object) -> list[tuple[str | None, str, str]]:
        """Forget the members of rooms whose membership changed; advisers who joined."""
        joined: list[tuple[str | None, str, str]] = []
        if not isinstance(events, list):
            return joined
        for event in events:
            if not isinstance(event, dict) or event.get("type") != "m.room.member":
                if isinstance(event, dict) and event.get("type") == "m.room.encryption":
                    self._mark_encrypted(str(event.get("room_id")))
                continue
            room_id, user = event.get("room_id"), event.get("state_key")
            if not isinstance(room_id, str) or not isinstance(user, str):
                continue
            self._members.pop(room_id, None)
            self._member_changes[room_id] = self._member_changes.get(room_id, 0) + 1
            content = event.get("content")
            if (
                isinstance(content, dict)
                and content.get("membership") == "join"
                and user in self.advisers
                and self._encrypted.get(room_id)
            ):
                joined.append((room_id, user, f"share-history:{event.get('event_id')}"))
        return joined

    async def check_to_device(self, timeout: float = 30.0) -> bool:
        """Send the bot's device a to-device message and wait for the homeserver to push it
        back in a transaction: without that (Synapse's msc2409_to_device_messages_enabled
        off) no room key ever reaches the hub, and every adviser's message would be
        reported undecryptable. Says so in the log at once, in one line."""
        # Three tries: a to-device message in a transaction that failed once (the homeserver
        # tried before the hub listened) is not resent by Synapse.
        for _attempt in range(3):
            nonce = uuid.uuid4().hex
            self._ping = (nonce, asyncio.Event())
            path = _path("sendToDevice", _PING, f"hub-ping-{nonce}")
            body = {"messages": {self.bot_mxid: {self.device_id: {"nonce": nonce}}}}
            await self._as_device("PUT", path, body)
            try:
                await asyncio.wait_for(self._ping[1].wait(), timeout / 3)
                break
            except TimeoutError:
                continue
        else:
            log.warning(
                "encryption: the homeserver did not push a to-device message to the hub within "
                "%.0f s: room keys will not arrive and advisers' encrypted messages cannot be "
                "read. Enable Synapse's experimental_features msc2409_to_device_messages_enabled "
                "and msc3202_transaction_extensions, check `receive_ephemeral: true` in the "
                "registration (docs/encryption.md), and restart Synapse.",
                timeout,
            )
            return False
        log.info("encryption: the homeserver pushes to-device messages to the hub")
        return True

    async def _to_device(self, raw: dict[str, Any]) -> None:
        if raw.get("type") == _PING:
            content = raw.get("content")
            nonce = content.get("nonce") if isinstance(content, dict) else None
            if self._ping is not None and nonce == self._ping[0]:
                self._ping[1].set()
            return
        event = ToDeviceEvent.parse_event(
            {k: v for k, v in raw.items() if k not in ("to_user_id", "to_device_id")}
        )
        if event is None or isinstance(event, (BadEvent, UnknownBadEvent)):
            log.info("encryption: skipped a to-device message of type %s", raw.get("type"))
            return
        if isinstance(event, RoomKeyRequest):
            # nio answers only its own user's devices; advisers' devices are answered here.
            # Best effort: a failed answer must not fail the transaction, which Synapse would
            # resend without its to-device messages (the room keys after this one).
            try:
                await self._answer_key_request(event)
            except ExternalError as exc:
                log.info("encryption: a key request of %s not answered: %s", event.sender, exc)
            return
        try:
            self.olm.handle_to_device_event(event)
        except EncryptionError as exc:
            log.warning("encryption: a to-device message from %s failed: %s", event.sender, exc)

    # -- decrypting ----------------------------------------------------------------------

    async def decrypt(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event an adviser's client encrypted (hub.matrix.decryption.Decryptor)."""
        content = event.get("content")
        if not isinstance(content, dict) or content.get("algorithm") != MEGOLM:
            raise Undecryptable("not a Megolm event")
        parsed = MegolmEvent.from_dict(event)
        if not isinstance(parsed, MegolmEvent):
            raise Undecryptable("malformed Megolm event")
        async with self._lock:
            self._mark_encrypted(event["room_id"])
            known = self.olm.inbound_group_store.get(
                event["room_id"], parsed.sender_key, parsed.session_id
            )
            if known is None:
                first_miss = parsed.session_id not in self._requested
                self._requested.add(parsed.session_id)
        if known is None:
            if first_miss:
                await self._request_key(event, parsed)
            raise RoomKeyMissing(f"no room key for session {parsed.session_id}")
        async with self._lock:
            try:
                plain = self.olm.decrypt_megolm_event(parsed, event["room_id"])
            except EncryptionError as exc:
                raise Undecryptable(str(exc)) from exc
            await self.store.flush()
        if isinstance(plain, (BadEvent, UnknownBadEvent)):
            raise Undecryptable("the decrypted payload is not a valid event")
        source = plain.source
        return {
            **{k: v for k, v in event.items() if k not in ("type", "content")},
            "type": source["type"],
            "content": source["content"],
        }

    async def _request_key(self, event: dict[str, Any], parsed: MegolmEvent) -> None:
        """Ask the sender's devices for a room key that never came. Synapse keeps to-device
        messages for an appservice only in memory: a transaction that fails once (the hub
        restarting) is resent with its events but without them. The sender's client shares
        the key again with a device it shared it with before."""
        request_id = uuid.uuid4().hex
        content = {
            "action": "request",
            "body": {
                "algorithm": MEGOLM,
                "room_id": event["room_id"],
                "sender_key": parsed.sender_key,
                "session_id": parsed.session_id,
            },
            "request_id": request_id,
            "requesting_device_id": self.device_id,
        }
        path = _path("sendToDevice", "m.room_key_request", f"hub-keyreq-{request_id}")
        try:
            await self._as_device("PUT", path, {"messages": {event["sender"]: {"*": content}}})
        except ExternalError as exc:
            log.info("encryption: a room key request to %s failed: %s", event["sender"], exc)
            return
        log.info(
            "encryption: asked %s for the room key of %s in %s",
            event["sender"],
            event["event_id"],
            event["room_id"],
        )

    # -- encrypting ----------------------------------------------------------------------

    def _mark_encrypted(self, room_id: str) -> None:
        if not self._encrypted.get(room_id):
            self._encrypted[room_id] = True
            self.store.save_encrypted_rooms([room_id])

    def mark_encrypted(self, room_id: str) -> None:
        """A portal the hub created encrypted (saved with the next flush)."""
        self._mark_encrypted(room_id)

    async def room_encrypted(self, room_id: str) -> bool:
        known = self._encrypted.get(room_id)
        if known is not None:
            return known
        state = await self.matrix.room_state(room_id, "m.room.encryption")
        encrypted = bool(state and state.get("algorithm"))
        if encrypted:
            async with self._lock:
                self._mark_encrypted(room_id)
                await self.store.flush()
            return True
        # An m.room.encryption that arrived in a transaction meanwhile wins: never overwrite
        # what that said with the older answer.
        return self._encrypted.setdefault(room_id, False)

    async def encrypt(
        self, room_id: str, event_type: str, content: dict[str, Any]
    ) -> dict[str, Any]:
        """The m.room.encrypted content of an event the bot or a ghost sends: the room key
        shared first with every device of the room's members that lacks it."""
        members = await self._room_members(room_id)
        async with self._lock:
            await self._ensure_shared(room_id, members)
            encrypted: dict[str, Any] = self.olm.group_encrypt(
                room_id, {"type": event_type, "content": content}
            )
            await self.store.flush()
        relates = content.get("m.relates_to")
        if isinstance(relates, dict):
            # Kept in clear (as clients do) so the server can aggregate reactions and edits.
            encrypted["m.relates_to"] = relates
        return encrypted

    async def _room_members(self, room_id: str) -> set[str]:
        members = self._members.get(room_id)
        if members is None:
            generation = self._member_changes.get(room_id, 0)
            members = set(await self.matrix.joined_members(room_id))
            # Cache only if no membership event came in while we asked: else the answer may
            # miss a new member, whose devices would then never get the key.
            if self._member_changes.get(room_id, 0) == generation:
                self._members[room_id] = members
        return members

    async def _ensure_devices(self, users: Iterable[str]) -> None:
        """Know the devices of `users` and have an Olm session with each of them."""
        unknown = [u for u in users if u not in self.olm.tracked_users]
        query = sorted(set(unknown) | (self.olm.users_for_key_query & set(users)))
        if query:
            doc = await self.matrix.request(
                "POST", "/_matrix/client/v3/keys/query", {"device_keys": {u: [] for u in query}}
            )
            self.olm.handle_response(KeysQueryResponse.from_dict(doc))
        missing = self.olm.get_missing_sessions(list(users))
        if missing:
            claim = {u: {d: "signed_curve25519" for d in devices} for u, devices in missing.items()}
            doc = await self._as_device(
                "POST", "/_matrix/client/v3/keys/claim", {"one_time_keys": claim}
            )
            self.olm.handle_response(KeysClaimResponse.from_dict(doc))

    def _devices(self, users: Iterable[str]) -> list[OlmDevice]:
        return [
            d
            for u in users
            for d in self.olm.device_store.active_user_devices(u)
            if d.id != self.device_id and not self.olm.is_device_blacklisted(d)
        ]

    async def _ensure_shared(self, room_id: str, members: set[str]) -> None:
        # Ghosts have no devices; the bot's own device needs no key.
        users = sorted(m for m in members if m != self.bot_mxid)
        await self._ensure_devices(users)
        devices = self._devices(users)
        session = self.olm.outbound_group_sessions.get(room_id)
        wanted = {(d.user_id, d.id) for d in devices}
        if session is not None and (session.expired or (session.users_shared_with - wanted)):
            # Expired, or a device that had the key is gone (left): a new key, so that
            # whoever left cannot read what follows.
            session = None
        if session is None:
            self.olm.create_outbound_group_session(room_id)
            session = self.olm.outbound_group_sessions[room_id]
            self._remember_own_key(room_id, session.id, session.session_key)
        todo = [d for d in devices if (d.user_id, d.id) not in session.users_shared_with]
        # The key from the session's first message: a device that comes later reads what
        # the room showed before it came (portals share their history with members).
        first = self.store.get_secret(_own_key_name(session.id))
        key = {
            "algorithm": MEGOLM,
            "room_id": room_id,
            "session_id": session.id,
            "session_key": first.decode() if first else session.session_key,
        }
        sent = await self._send_olm(todo, "m.room_key", key)
        session.users_shared_with.update((d.user_id, d.id) for d in sent)
        session.shared = True

    def _remember_own_key(self, room_id: str, session_id: str, session_key: str) -> None:
        """The key of a session at its first message: what an adviser's device that comes
        later needs to read the room's history from the start. Only the signed form of an
        outbound session makes an m.room_key, and it cannot be made again later."""
        sessions = self.store.get_json(_own_room_name(room_id)) or []
        sessions.append([session_id, int(time.time())])
        self.store.set_json(_own_room_name(room_id), sessions)
        self.store.set_secret(_own_key_name(session_id), session_key.encode())

    async def _send_olm(
        self, devices: list[OlmDevice], kind: str, content: dict[str, Any]
    ) -> list[OlmDevice]:
        """Olm-encrypt `content` to each device (with a session) and send it to-device.
        Returns the devices it went to: one without an Olm session (no one-time key could be
        claimed) did not get it and must be tried again later, not recorded as served."""
        messages: list[tuple[OlmDevice, dict[str, Any]]] = []
        for device in devices:
            olm_session = self.olm.session_store.get(device.curve25519)
            if olm_session is None:
                log.info(
                    "encryption: no Olm session with %s %s (no one-time key left?)",
                    device.user_id,
                    device.id,
                )
                continue
            messages.append((device, self.olm._olm_encrypt(olm_session, device, kind, content)))
        # The ratchets moved: persist them before the messages leave.
        await self.store.flush()
        for start in range(0, len(messages), _CHUNK):
            body: dict[str, dict[str, Any]] = {}
            for device, payload in messages[start : start + _CHUNK]:
                body.setdefault(device.user_id, {})[device.id] = payload
            path = _path("sendToDevice", "m.room.encrypted", f"hub-{uuid.uuid4().hex}")
            await self._as_device("PUT", path, {"messages": body})
        return [device for device, _payload in messages]

    # -- history for advisers who come later ---------------------------------------------

    async def share_history_with(self, room_id: str | None, user_id: str) -> int:
        """Send an adviser's devices the keys of the sessions the bot started in a room (as
        m.room_key, from each session's first message on), or, with `room_id` None (a new
        device of theirs), of every room they are in with a session of the last
        `history_days`. Devices that had a room's keys are not sent them again. Returns how
        many keys were sent."""
        if user_id not in self.advisers:
            return 0
        async with self._lock:
            await self._ensure_devices([user_id])
        if room_id is not None:
            rooms = [room_id]
        else:
            since = time.time() - self.history_days * 86400
            rooms = []
            for name in self.store.json_names(_OWN_ROOMS_PREFIX):
                sessions = self.store.get_json(name) or []
                if any(created >= since for _, created in sessions):
                    rooms.append(name[len(_OWN_ROOMS_PREFIX) :])
        sent = 0
        for room in rooms:
            if room_id is None and user_id not in await self._room_members(room):
                continue
            sent += await self._share_room_history(room, user_id)
        if sent:
            log.info("encryption: shared %d room keys with %s", sent, user_id)
        return sent

    async def _share_room_history(self, room_id: str, user_id: str) -> int:
        async with self._lock:
            sessions = self.store.get_json(_own_room_name(room_id)) or []
            done_name = f"history_devices|{room_id}|{user_id}"
            done = set(self.store.get_json(done_name) or [])
            devices = [d for d in self._devices([user_id]) if d.id not in done]
            if not sessions or not devices:
                return 0
            sent = 0
            served: set[str] = set()
            for session_id, _created in sessions:
                secret = self.store.get_secret(_own_key_name(session_id))
                if secret is None:
                    continue
                key = {
                    "algorithm": MEGOLM,
                    "room_id": room_id,
                    "session_id": session_id,
                    "session_key": secret.decode(),
                }
                got = await self._send_olm(devices, "m.room_key", key)
                sent += len(got)
                served |= {d.id for d in got}
            # Only devices that got the keys are done: the others are tried next time.
            self.store.set_json(done_name, sorted(done | served))
            await self.store.flush()
        return sent

    async def _answer_key_request(self, event: RoomKeyRequest) -> None:
        """An adviser's device asks for a room key of a portal: forward it. Anyone else, or a
        key the hub does not hold, is ignored (logged)."""
        if event.sender not in self.advisers or not event.room_id:
            log.info("encryption: ignored a key request from %s", event.sender)
            return
        if self.is_portal is not None and not await self.is_portal(event.room_id):
            log.info("encryption: ignored a key request for %s: not a portal", event.room_id)
            return
        group = self.olm.inbound_group_store.get(event.room_id, event.sender_key, event.session_id)
        if group is None:
            return
        await self._ensure_devices([event.sender])
        device = self.olm.device_store[event.sender].get(event.requesting_device_id)
        if device is None:
            return
        key = {
            "algorithm": MEGOLM,
            "forwarding_curve25519_key_chain": group.forwarding_chain,
            "room_id": event.room_id,
            "sender_claimed_ed25519_key": group.ed25519,
            "sender_key": group.sender_key,
            "session_id": group.id,
            "session_key": group.export_session(group.first_known_index),
        }
        await self._send_olm([device], "m.forwarded_room_key", key)
        log.info(
            "encryption: forwarded a room key of %s to %s %s",
            event.room_id,
            event.sender,
            event.requesting_device_id,
        )


def _own_room_name(room_id: str) -> str:
    return f"{_OWN_ROOMS_PREFIX}{room_id}"


def _own_key_name(session_id: str) -> str:
    return f"own_session_key|{session_id}"


def _first_list(body: dict[str, Any], keys: tuple[str, ...]) -> list[Any]:
    for key in keys:
        value = body.get(key)
        if isinstance(value, list):
            return value
    return []


def _first_dict(body: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    for key in keys:
        value = body.get(key)
        if isinstance(value, dict):
            return value
    return {}
