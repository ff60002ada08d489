"""An adviser in an encrypting Matrix client (matrix-nio with its Olm machine on vodozemac),
for the end-to-end tests of end-to-bridge encryption (issue 13).

Unlike `helpers.Adviser`, which sees `m.room.encrypted` events as opaque, this client keeps an
Olm/Megolm store of its own (a directory per device), uploads and claims keys as nio asks,
decrypts what it syncs and encrypts what it sends. Every timeline event is recorded as a
`Seen`: the plaintext event (what a user reads) and whether it arrived encrypted, so a test
can ask both "did the customer's text arrive" and "did it arrive encrypted". Events nio could
not decrypt are kept apart (`undecryptable`) and retried after every sync, because a room key
may arrive after the event it unlocks (to-device and room events come separately).

Waiting looks at everything recorded since the client started (or since a `mark()`), so a
test never misses an event that arrived before it began to wait."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    Event,
    JoinedMembersResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)
from nio.crypto.attachments import decrypt_attachment

log = logging.getLogger(__name__)

# Events that the spec leaves in clear in an encrypted room: state (it has a state_key) and
# redactions (the server must be able to read them). Everything else must be encrypted.
CLEAR_ALLOWED_TYPES = frozenset({"m.room.redaction"})


@dataclass
class Seen:
    """One timeline event as the adviser's client shows it."""

    room_id: str
    event: dict[str, Any]  # the plaintext event: type, content, sender, event_id
    encrypted: bool  # arrived as m.room.encrypted and was decrypted by this client
    verified: bool = False  # nio trusted the sending device (never for the hub's ghosts)
    sender_key: str | None = None  # the Curve25519 key of the device that encrypted it


class CryptoAdviser:
    """A Matrix user logged in with a password on a new device that encrypts."""

    def __init__(self, homeserver: str, mxid: str, store_dir: Path) -> None:
        store_dir.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        self.homeserver = homeserver
        self.client = AsyncClient(homeserver, mxid, store_path=str(store_dir), config=config)
        self.seen: list[Seen] = []
        # event_id -> (room_id, the encrypted event): nio has no key for it (yet).
        self.pending: dict[str, tuple[str, MegolmEvent]] = {}
        self.invites: dict[str, dict[str, Any]] = {}  # room_id -> {"name": ...}
        self.receipts: list[tuple[str, str, str]] = []  # (room_id, event_id, reader)
        self.sync_errors: list[str] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._synced_once = asyncio.Event()

    # --- session ----------------------------------------------------------------------------

    @property
    def mxid(self) -> str:
        return str(self.client.user_id)

    @property
    def device_id(self) -> str:
        return str(self.client.device_id)

    async def login(self, password: str, device_name: str = "e2e-crypto") -> None:
        """Log in (a new device), publish its keys, do a first sync and start syncing."""
        resp = await self.client.login(password, device_name=device_name)
        assert isinstance(resp, LoginResponse), resp
        # nio loaded the (new, empty) store on login; the device keys must be on the server
        # before anybody can encrypt for us.
        await self._keys_housekeeping()
        await self._sync_once(timeout=0, full_state=True)
        await self._keys_housekeeping()
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.client.close()

    async def _loop(self) -> None:
        while True:
            try:
                await self._sync_once(timeout=500)
                await self._keys_housekeeping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a restarting server: keep syncing, as clients do
                self.sync_errors.append(repr(exc))
                await asyncio.sleep(0.3)

    async def _keys_housekeeping(self) -> None:
        """What nio's sync_forever does between syncs: send queued to-device messages (key
        shares, key requests), upload our one-time keys, learn other devices' keys and open
        Olm sessions to devices we must share room keys with."""
        c = self.client
        await c.send_to_device_messages()
        if c.should_upload_keys:
            resp = await c.keys_upload()
            if not isinstance(resp, KeysUploadResponse):
                self.sync_errors.append(f"keys_upload: {resp}")
        if c.should_query_keys:
            resp_q = await c.keys_query()
            if not isinstance(resp_q, KeysQueryResponse):
                self.sync_errors.append(f"keys_query: {resp_q}")
        if c.should_claim_keys:
            resp_c = await c.keys_claim(c.get_users_for_key_claiming())
            if not isinstance(resp_c, KeysClaimResponse):
                self.sync_errors.append(f"keys_claim: {resp_c}")

    async def _sync_once(self, timeout: int, full_state: bool = False) -> None:
        resp = await self.client.sync(timeout=timeout, full_state=full_state)
        if not isinstance(resp, SyncResponse):
            self.sync_errors.append(f"sync: {resp}")
            await asyncio.sleep(0.2)
            return
        for room_id, info in resp.rooms.invite.items():
            name = None
            for ev in info.invite_state:
                source = getattr(ev, "source", {})
                if source.get("type") == "m.room.name":
                    name = source.get("content", {}).get("name")
            self.invites[room_id] = {"name": name}
        for room_id, joined in resp.rooms.join.items():
            for ev in joined.state:
                self._record(room_id, ev)
            for ev in joined.timeline.events:
                self._record(room_id, ev)
            for eph in joined.ephemeral:
                for r in getattr(eph, "receipts", []):
                    self.receipts.append((room_id, r.event_id, r.user_id))
        # Keys that arrived in this sync (to-device m.room_key) may unlock earlier events.
        self._retry_pending()
        self._synced_once.set()
        self._changed.set()

    def _record(self, room_id: str, ev: Any) -> None:
        if isinstance(ev, MegolmEvent):  # nio could not decrypt it (yet)
            self.pending[ev.event_id] = (room_id, ev)
            return
        source = dict(getattr(ev, "source", {}) or {})
        if not source:
            return
        if getattr(ev, "decrypted", False):
            self._add_decrypted(room_id, ev)
        else:
            self.seen.append(Seen(room_id, source, encrypted=False))

    def _add_decrypted(self, room_id: str, ev: Event) -> None:
        source = dict(ev.source)
        source.setdefault("room_id", room_id)
        self.seen.append(
            Seen(
                room_id,
                source,
                encrypted=True,
                verified=bool(getattr(ev, "verified", False)),
                sender_key=getattr(ev, "sender_key", None),
            )
        )

    def _retry_pending(self) -> None:
        for event_id, (room_id, megolm) in list(self.pending.items()):
            try:
                decrypted = self.client.decrypt_event(megolm)
            except Exception:  # still no key: nio raises EncryptionError
                continue
            if isinstance(decrypted, Event) and getattr(decrypted, "decrypted", False):
                del self.pending[event_id]
                self._add_decrypted(room_id, decrypted)

    # --- waiting ----------------------------------------------------------------------------

    def mark(self) -> int:
        """A position in `seen`: pass it as `after` to wait only for what comes later."""
        return len(self.seen)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"condition not met in time (sync errors: {self.sync_errors[-3:]})"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.05, deadline - time.monotonic()))

    async def wait_seen(
        self,
        room_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 20,
        after: int = 0,
    ) -> Seen:
        """The first recorded event of the room (decrypted or clear) matching `predicate`."""

        def found() -> Seen | None:
            for s in self.seen[after:]:
                if s.room_id == room_id and predicate(s.event):
                    return s
            return None

        result: Seen = await self.wait_for(found, timeout)
        return result

    async def wait_event(
        self,
        room_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 20,
        after: int = 0,
    ) -> dict[str, Any]:
        """Like `helpers.Adviser.wait_event`: the plaintext event."""
        return (await self.wait_seen(room_id, predicate, timeout, after)).event

    def room_seen(
        self, room_id: str, predicate: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.room_id == room_id and (predicate is None or predicate(s.event))
        ]

    def room_events(
        self, room_id: str, predicate: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        return [s.event for s in self.room_seen(room_id, predicate)]

    def undecryptable(self, room_id: str | None = None) -> list[MegolmEvent]:
        """Encrypted events this client has no key for (after retrying with every key that
        arrived). Tests assert this is empty."""
        return [ev for rid, ev in self.pending.values() if room_id is None or rid == room_id]

    async def wait_invite(self, name_contains: str, timeout: float = 20) -> str:
        def found() -> str | None:
            for room_id, info in self.invites.items():
                if info.get("name") and name_contains in info["name"]:
                    return room_id
            return None

        return str(await self.wait_for(found, timeout))

    async def join(self, room_id: str) -> None:
        resp = await self.client.join(room_id)
        assert getattr(resp, "room_id", None) == room_id, resp
        # room_send needs the room's state (m.room.encryption) that the next sync brings.
        await self.wait_for(lambda: room_id in self.client.rooms, timeout=20)

    async def join_invites(self) -> list[str]:
        """Join every room this client is invited to and has not joined yet."""
        joined = []
        for room_id in list(self.invites):
            if room_id not in self.client.rooms:  # nio keeps joined rooms there only
                await self.join(room_id)
                joined.append(room_id)
        return joined

    async def wait_room_encrypted(self, room_id: str, timeout: float = 20) -> None:
        def encrypted() -> bool:
            room = self.client.rooms.get(room_id)
            return bool(room and room.encrypted)

        await self.wait_for(encrypted, timeout)

    # --- trust ------------------------------------------------------------------------------

    async def trust_user(self, user_id: str, how: str = "verify") -> int:
        """Mark every known device of `user_id` verified ("verify") or ignored ("ignore"), so
        encrypting for them never fails on an unverified device. Returns how many devices."""
        c = self.client
        assert c.olm is not None
        c.olm.users_for_key_query.add(user_id)
        if c.should_query_keys:
            await c.keys_query()
        n = 0
        for device in c.device_store.active_user_devices(user_id):
            if how == "verify":
                c.verify_device(device)
            else:
                c.ignore_device(device)
            n += 1
        return n

    # --- sending ----------------------------------------------------------------------------

    async def _prepare(self, room_id: str) -> None:
        """Make sure nio can encrypt for the room now: members loaded, their keys known and
        our room key shared with their devices (what room_send does itself, but reactions
        bypass it, see `react`)."""
        c = self.client
        if room_id not in c.rooms:
            await self.wait_for(lambda: room_id in c.rooms)
        room = c.rooms[room_id]
        if room.encrypted and not room.members_synced:
            resp = await c.joined_members(room_id)
            assert isinstance(resp, JoinedMembersResponse), resp
        if c.should_query_keys:
            await c.keys_query()
        assert c.olm is not None
        if room.encrypted and c.olm.should_share_group_session(room_id):
            await c.share_group_session(room_id, ignore_unverified_devices=True)

    async def send(
        self, room_id: str, content: dict[str, Any], kind: str = "m.room.message"
    ) -> str:
        """Send (encrypted when the room is) and return the event id."""
        await self._prepare(room_id)
        resp = await self.client.room_send(room_id, kind, content, ignore_unverified_devices=True)
        assert isinstance(resp, RoomSendResponse), resp
        return str(resp.event_id)

    async def send_text(self, room_id: str, body: str, **extra: Any) -> str:
        return await self.send(room_id, {"msgtype": "m.text", "body": body, **extra})

    async def send_notice(self, room_id: str, body: str) -> str:
        return await self.send(room_id, {"msgtype": "m.notice", "body": body})

    async def send_reply(self, room_id: str, to_event_id: str, body: str) -> str:
        content = {
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": {"m.in_reply_to": {"event_id": to_event_id}},
        }
        return await self.send(room_id, content)

    async def send_edit(self, room_id: str, event_id: str, new_body: str) -> str:
        """An m.replace edit, as Element sends it (fallback body with a leading '* ')."""
        content = {
            "msgtype": "m.text",
            "body": f"* {new_body}",
            "m.new_content": {"msgtype": "m.text", "body": new_body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
        }
        return await self.send(room_id, content)

    async def react(self, room_id: str, event_id: str, key: str, encrypt: bool = True) -> str:
        """An m.reaction. nio's room_send never encrypts reactions; Element does, so by default
        this encrypts it by hand (m.relates_to stays in clear, as the spec asks)."""
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        room = self.client.rooms.get(room_id)
        if not encrypt or room is None or not room.encrypted:
            return await self.send(room_id, content, kind="m.reaction")
        await self._prepare(room_id)
        kind, encrypted = self.client.encrypt(room_id, "m.reaction", content)
        return await self.send_raw(room_id, kind, encrypted)

    async def send_raw(self, room_id: str, kind: str, content: dict[str, Any]) -> str:
        """PUT an event as given (already encrypted, or deliberately clear)."""
        url = (
            f"{self.homeserver}/_matrix/client/v3/rooms/{quote(room_id)}/send/"
            f"{quote(kind)}/{uuid.uuid4().hex}"
        )
        async with (
            aiohttp.ClientSession() as http,
            http.put(url, json=content, headers=self._auth) as resp,
        ):
            doc = await resp.json()
            assert resp.status == 200, doc
            return str(doc["event_id"])

    async def send_image(
        self, room_id: str, data: bytes, filename: str = "image.png", mimetype: str = "image/png"
    ) -> tuple[str, dict[str, Any]]:
        """Upload `data` as an encrypted attachment and send an m.image with `file` (no `url`),
        as clients do in encrypted rooms. Returns (event id, the content sent)."""
        up, keys = await self.client.upload(
            lambda *_: data,
            content_type=mimetype,
            filename=filename,
            filesize=len(data),
            encrypt=True,
        )
        assert isinstance(up, UploadResponse), up
        assert keys, "nio returned no decryption keys"
        content = {
            "msgtype": "m.image",
            "body": filename,
            "file": {"url": up.content_uri, **keys},
            "info": {"mimetype": mimetype, "size": len(data)},
        }
        return await self.send(room_id, content), content

    # --- media ------------------------------------------------------------------------------

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.client.access_token}"}

    async def download(self, mxc: str) -> bytes:
        """The bytes stored under an mxc URI (authenticated media, as Synapse requires)."""
        server, media_id = mxc[len("mxc://") :].split("/", 1)
        url = f"{self.homeserver}/_matrix/client/v1/media/download/{server}/{media_id}"
        async with aiohttp.ClientSession() as http, http.get(url, headers=self._auth) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.read()

    async def download_decrypted(self, content: dict[str, Any]) -> bytes:
        """Download and decrypt the encrypted attachment of a message (its `file`)."""
        file = content["file"]
        ciphertext = await self.download(file["url"])
        return bytes(
            decrypt_attachment(ciphertext, file["key"]["k"], file["hashes"]["sha256"], file["iv"])
        )

    # --- the server's view ------------------------------------------------------------------

    async def server_timeline(self, room_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The room's events as the server stores them (not decrypted), oldest first: to
        check what travels in clear."""
        events: list[dict[str, Any]] = []
        start: str | None = None
        async with aiohttp.ClientSession() as http:
            while len(events) < limit:
                params = {"dir": "b", "limit": "100"}
                if start:
                    params["from"] = start
                url = f"{self.homeserver}/_matrix/client/v3/rooms/{quote(room_id)}/messages"
                async with http.get(url, params=params, headers=self._auth) as resp:
                    doc = await resp.json()
                    assert resp.status == 200, doc
                chunk = doc.get("chunk", [])
                events.extend(chunk)
                start = doc.get("end")
                if not chunk or not start:
                    break
        return list(reversed(events))

    async def load_history(self, room_id: str) -> int:
        """Record the room's earlier events that the first sync left out (its timeline is
        limited), as scrolling back in a client would: decrypted when a key is here,
        otherwise pending (and retried after every sync). Returns how many were new."""
        known = {s.event.get("event_id") for s in self.seen} | set(self.pending)
        added = 0
        for raw in await self.server_timeline(room_id):
            if raw.get("event_id") in known or "state_key" in raw:
                continue
            ev = Event.parse_event(raw)
            if isinstance(ev, MegolmEvent):
                ev.room_id = room_id
                try:
                    decrypted = self.client.decrypt_event(ev)
                except Exception:  # no key (yet)
                    decrypted = None
                if isinstance(decrypted, Event) and getattr(decrypted, "decrypted", False):
                    self._add_decrypted(room_id, decrypted)
                else:
                    self.pending[ev.event_id] = (room_id, ev)
            else:
                self.seen.append(Seen(room_id, raw, encrypted=False))
            added += 1
        self._changed.set()
        return added


def clear_events(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of a server timeline that travel in clear although they should not: not
    state, not encrypted, not a redaction."""
    return [
        ev
        for ev in timeline
        if "state_key" not in ev
        and ev.get("type") != "m.room.encrypted"
        and ev.get("type") not in CLEAR_ALLOWED_TYPES
    ]
