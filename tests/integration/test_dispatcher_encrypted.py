"""Encrypted events in the matrix.event handler (hub.matrix.dispatcher), on SQLite and
PostgreSQL, with a fake decryptor: never silent. What cannot be read is logged, counted and
told to the room once per conversation; a missing room key is waited for a while; what is
decrypted goes the way a clear event goes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY

from hub.core.bot import CommandHandler, CommandRunner, help_command
from hub.core.commands import CommandRegistry
from hub.db.database import Database
from hub.db.jobs import room_key
from hub.jobs.job import Job, RetryLater
from hub.jobs.kinds import CHANNEL_REACT, CHANNEL_SEND, MATRIX_EVENT, MATRIX_SEND
from hub.matrix.decryption import RoomKeyMissing, Undecryptable
from hub.matrix.dispatcher import Dispatcher, key_retry_delay
from tests.integration.test_dispatcher import (
    ANNA,
    BOB,
    LOBBY,
    Sessions,
    is_own,
    jobs,
    portal,
    room_notices,
    to_customer,
)

NO_ENCRYPTION = (
    "🔒 This message is encrypted and cannot reach the customer: the hub does not take part "
    "in encrypted rooms (encryption.enabled is off in its configuration)"
)
NO_KEY = (
    "🔒 This message is encrypted and cannot reach the customer: the hub's device did not "
    "receive the key of this message (the sending device may not trust it; sending again "
    "may help)"
)
BROKEN = (
    "🔒 This message is encrypted and cannot reach the customer: the hub could not decrypt it "
    "(the message is damaged or uses an encryption the hub does not know)"
)
MEGOLM = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEn…", "session_id": "s1"}


class FakeDecryptor:
    """Answers per event id: a plaintext (type, content) or an exception to raise."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[str, dict[str, Any]] | Exception] = {}
        self.asked: list[str] = []

    async def decrypt(self, event: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(event["event_id"])
        answer = self.answers[event["event_id"]]
        if isinstance(answer, Exception):
            raise answer
        type_, content = answer
        # A lying plaintext: the dispatcher must keep the homeserver's sender.
        return {**event, "type": type_, "content": content, "sender": "@mallory:evil.example"}


def dispatcher(db: Database, decryptor: FakeDecryptor | None) -> Dispatcher:
    registry: CommandRegistry[CommandHandler] = CommandRegistry()
    registry.register(help_command(registry, "!"))
    return Dispatcher(
        db, is_own, registry, CommandRunner(registry, [ANNA]), "!", decryptor=decryptor
    )


class EncryptedRoom:
    def __init__(self, db: Database, handler: Dispatcher, room_id: str) -> None:
        self.db, self.handler, self.room_id = db, handler, room_id
        self.n = 0

    def next_id(self) -> str:
        self.n += 1
        return f"${self.room_id[1:4]}-enc-{self.n}"

    async def push(self, sender: str, event_id: str | None = None, attempts: int = 0) -> str:
        event = {
            "event_id": event_id or self.next_id(),
            "room_id": self.room_id,
            "type": "m.room.encrypted",
            "sender": sender,
            "origin_server_ts": 1_700_000_000_000,
            "content": MEGOLM,
        }
        job = Job(1, MATRIX_EVENT, room_key(self.room_id), event, attempts)
        finish = await self.handler.handle(job)
        if finish is not None:
            await self.db.write(finish)
        return str(event["event_id"])


def undecryptable(reason: str) -> float:
    value = REGISTRY.get_sample_value("hub_undecryptable_events_total", {"reason": reason})
    return value or 0.0


async def test_an_unreadable_event_is_told_once_per_conversation_logged_and_counted(
    db: Database, sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "hub.matrix.dispatcher")
    await portal(db, "4915100000101", "!e1:shop.example")
    decryptor = FakeDecryptor()
    room = EncryptedRoom(db, dispatcher(db, decryptor), "!e1:shop.example")
    before = undecryptable("broken")
    first, second = room.next_id(), room.next_id()
    decryptor.answers[first] = Undecryptable("unknown algorithm")
    decryptor.answers[second] = Undecryptable("bad payload")
    await room.push(ANNA, first)
    await room.push(ANNA, second)
    [notice] = await room_notices(sessions, room.room_id)
    assert notice["msgtype"] == "m.notice"
    assert notice["body"] == BROKEN
    assert notice["m.relates_to"] == {"m.in_reply_to": {"event_id": first}}
    assert undecryptable("broken") == before + 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"encrypted event {first} in {room.room_id} from {ANNA} not relayed to the customer: "
        "broken (unknown algorithm)",
        f"encrypted event {second} in {room.room_id} from {ANNA} not relayed to the customer: "
        "broken (bad payload)",
    ]
    assert await to_customer(sessions) == []

    # Another conversation is told on its own.
    await portal(db, "4915100000102", "!e2:shop.example")
    other = EncryptedRoom(db, dispatcher(db, decryptor), "!e2:shop.example")
    third = other.next_id()
    decryptor.answers[third] = Undecryptable("bad payload")
    await other.push(BOB, third)
    assert [n["body"] for n in await room_notices(sessions, other.room_id)] == [BROKEN]


async def test_a_missing_room_key_is_waited_for_then_told(db: Database, sessions: Sessions) -> None:
    await portal(db, "4915100000103", "!e3:shop.example")
    decryptor = FakeDecryptor()
    handler = dispatcher(db, decryptor)
    room = EncryptedRoom(db, handler, "!e3:shop.example")
    event_id = room.next_id()
    decryptor.answers[event_id] = RoomKeyMissing("no session s1")
    before = undecryptable("no_key")
    with pytest.raises(RetryLater) as retry:
        await room.push(ANNA, event_id, attempts=0)
    assert retry.value.delay == 1
    with pytest.raises(RetryLater):
        await room.push(ANNA, event_id, attempts=4)
    assert await room_notices(sessions, room.room_id) == []
    assert undecryptable("no_key") == before
    # After 20 s of retries the key is given up on.
    await room.push(ANNA, event_id, attempts=5)
    assert [n["body"] for n in await room_notices(sessions, room.room_id)] == [NO_KEY]
    assert undecryptable("no_key") == before + 1


def test_the_key_wait_fits_in_the_job_queues_attempts() -> None:
    delays = []
    attempts = 0
    while (delay := key_retry_delay(attempts, 20.0)) is not None:
        delays.append(delay)
        attempts += 1
    assert delays == [1, 2, 4, 8, 5] and sum(delays) == 20
    assert key_retry_delay(0, 0) is None
    longest = 0
    while key_retry_delay(longest, 600) is not None:
        longest += 1
    assert longest < 12  # outbox.max_attempts' default: no event dies unexplained


async def test_without_a_decryptor_the_room_is_told_the_hub_does_not_take_part(
    db: Database, sessions: Sessions
) -> None:
    await portal(db, "4915100000104", "!e4:shop.example")
    room = EncryptedRoom(db, dispatcher(db, None), "!e4:shop.example")
    before = undecryptable("no_encryption")
    await room.push(ANNA)
    await room.push(ANNA)
    assert [n["body"] for n in await room_notices(sessions, room.room_id)] == [NO_ENCRYPTION]
    assert undecryptable("no_encryption") == before + 2
    assert await to_customer(sessions) == []


async def test_outside_a_portal_and_from_our_own_users_nobody_is_told(
    db: Database, sessions: Sessions
) -> None:
    decryptor = FakeDecryptor()
    lobby = EncryptedRoom(db, dispatcher(db, decryptor), LOBBY)
    event_id = lobby.next_id()
    decryptor.answers[event_id] = Undecryptable("bad payload")
    before = undecryptable("broken")
    await lobby.push(BOB, event_id)
    assert undecryptable("broken") == before + 1
    await portal(db, "4915100000105", "!e5:shop.example")
    room = EncryptedRoom(db, dispatcher(db, decryptor), "!e5:shop.example")
    await room.push("@customer_abc:shop.example", "$never-asked")
    assert decryptor.asked == [event_id]
    assert await jobs(sessions, MATRIX_SEND) == []


async def test_decrypted_events_go_the_way_clear_ones_go(db: Database, sessions: Sessions) -> None:
    _, customer_event = await portal(db, "4915100000106", "!e6:shop.example")
    decryptor = FakeDecryptor()
    room = EncryptedRoom(db, dispatcher(db, decryptor), "!e6:shop.example")
    text, command, reaction, outsider = (room.next_id() for _ in range(4))
    decryptor.answers[text] = ("m.room.message", {"msgtype": "m.text", "body": "Guten Tag!"})
    decryptor.answers[command] = ("m.room.message", {"msgtype": "m.text", "body": "!help"})
    rel = {"rel_type": "m.annotation", "event_id": customer_event, "key": "👍"}
    decryptor.answers[reaction] = ("m.reaction", {"m.relates_to": rel})
    decryptor.answers[outsider] = ("m.room.message", {"msgtype": "m.text", "body": "me too"})
    for event_id in (text, command, reaction):
        await room.push(ANNA, event_id)
    # The sender is the homeserver's, not the plaintext's: Anna's reply reaches the customer.
    assert await to_customer(sessions) == [(ANNA, "Guten Tag!")]
    assert len(await jobs(sessions, CHANNEL_SEND)) == 1
    [react] = await jobs(sessions, CHANNEL_REACT)
    assert react.payload["emoji"] == "👍"
    out = {j.idempotency_key: j.payload for j in await jobs(sessions, MATRIX_SEND)}
    assert f"{MATRIX_SEND}/reply:{command}:0" in out  # !help answered
    assert "!help" in out[f"{MATRIX_SEND}/reply:{command}:0"]["content"]["body"]
    # The advisers-only rule holds for decrypted events too.
    await room.push(BOB, outsider)
    assert await to_customer(sessions) == [(ANNA, "Guten Tag!")]
    bodies = [n["body"] for n in await room_notices(sessions, room.room_id)]
    assert bodies[-1] == (
        f"{BOB} is not one of the shop's advisers: their messages do not reach the customer."
    )
    assert not any(b.startswith("🔒") for b in bodies)
