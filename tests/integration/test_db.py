"""Migrations, the units of work behind identities, conversations and messages, the one store
path for customers' messages (hub.db.inbound) and the job queue under two workers, each on
SQLite and on PostgreSQL (fixtures in conftest.py).

Every write goes through `Database.write` with a unit of work, as the hub does; tests look
at the rows the units wrote through plain ORM sessions (`sessions`) or through the hub's own
lookups (`db.read`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text, update
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.config import OutboxConfig
from hub.core.types import (
    BlockChange,
    Envelope,
    InboundMessage,
    MediaRef,
    Sender,
    StatusUpdate,
)
from hub.db import conversations, inbound, jobs, messages, outbound, webchat
from hub.db.database import Database, Tx, alive
from hub.db.engine import _alembic_config, migrate, open_database
from hub.db.inbound import InboundPolicy, IngestResult
from hub.db.jobs import LeaseOffer, conversation_key, receipt_key, room_out_key
from hub.db.messages import MessageContext
from hub.db.models import (
    Base,
    ChannelIdentity,
    Conversation,
    Customer,
    MediaFile,
    Message,
    OutboxItem,
    utcnow,
)
from hub.errors import StartupError
from hub.jobs.job import Handler, Job
from hub.jobs.kinds import CHANNEL_SEND, MATRIX_DELIVER, MATRIX_RECEIPT_OUT, MATRIX_SEND
from hub.jobs.worker import Worker

Sessions = async_sessionmaker[AsyncSession]
HEAD = ScriptDirectory.from_config(_alembic_config()).get_current_head()
POLICY = InboundPolicy(
    channel="webchat",
    code="web",
    label="Web chat",
    ghost_prefix="customer_",
    domain="shop.example",
    shop_name="Shop",
)
ROOM = "!room:shop.example"


async def count(sessions: Sessions, model: type[Any]) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def outbox(sessions: Sessions, kind: str | None = None) -> list[OutboxItem]:
    """The queued jobs (of one kind), oldest first."""
    query = select(OutboxItem).order_by(OutboxItem.id)
    if kind is not None:
        query = query.where(OutboxItem.kind == kind)
    async with sessions() as s:
        return list((await s.scalars(query)).all())


def columns(obj: Any) -> dict[str, Any]:
    """A model object's column values (to compare detached rows with what the ORM reads)."""
    return {c: getattr(obj, c) for c in type(obj).__table__.columns.keys()}


# --- migrations -------------------------------------------------------------------------------


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child-process"])
async def test_migrate_creates_the_schema_on_a_fresh_database(db_url: str, in_child: bool) -> None:
    db = open_database(db_url)
    try:
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
        await migrate(db, in_child=in_child)
        await migrate(db, in_child=in_child)  # already at head: nothing to do, no error
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(_tables)
            assert tables == set(Base.metadata.tables) | {"alembic_version"}
            assert await conn.run_sync(_revision) == HEAD
        await db.write(alive)  # and the database's own connections use it
    finally:
        await db.close()


def _schema_diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, Base.metadata))


async def test_migrations_match_the_models(db: Database) -> None:
    """A model changed without a migration would make this list non-empty (`db` is
    migrated by its fixture)."""
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_schema_diff) == []


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child-process"])
async def test_a_foreign_schema_is_refused(db_url: str, in_child: bool) -> None:
    """Another program's tables and no revision of ours: refused, nothing added."""
    db = open_database(db_url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE wp_posts (id INTEGER PRIMARY KEY)"))
        with pytest.raises(StartupError) as info:
            await migrate(db, in_child=in_child)
        message = str(info.value)
        assert "tables that are not the hub's (wp_posts)" in message
        assert not message.startswith("database migration failed")
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_tables) == {"wp_posts"}
    finally:
        await db.close()


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child-process"])
async def test_a_newer_schema_is_refused(db_url: str, in_child: bool) -> None:
    db = open_database(db_url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
            )
            await conn.execute(text("INSERT INTO alembic_version VALUES ('0042_from_the_future')"))
        with pytest.raises(StartupError) as info:
            await migrate(db, in_child=in_child)
        message = str(info.value)
        assert not message.startswith("database migration failed")  # refused, not crashed
        assert "0042_from_the_future" in message
        assert "newer" in message
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_tables) == {"alembic_version"}  # nothing touched
    finally:
        await db.close()


async def test_a_failing_migration_child_is_reported_not_hidden(tmp_path: Path) -> None:
    """A database the child cannot open: a StartupError with its exit code and stderr tail."""
    (tmp_path / "locked").mkdir()
    db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'locked'}")  # a directory
    try:
        failed = r"database migration failed \(exit 1\): .*unable to open database file"
        with pytest.raises(StartupError, match=failed):
            await migrate(db, in_child=True)
    finally:
        await db.close()


async def test_a_migration_failing_in_the_child_names_its_cause(tmp_path: Path) -> None:
    """The parent reports the error line, not the tail of SQLAlchemy's SQL dump."""
    db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    try:
        async with db.engine.begin() as conn:  # at 0005, but 0006's table is there already
            await conn.execute(
                text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
            )
            await conn.execute(text("INSERT INTO alembic_version VALUES ('0005')"))
            await conn.execute(text("CREATE TABLE consent_requests (id INTEGER PRIMARY KEY)"))
        with pytest.raises(StartupError) as info:
            await migrate(db, in_child=True)
        assert str(info.value) == (
            "database migration failed (exit 1): "
            "OperationalError: table consent_requests already exists"
        )
    finally:
        await db.close()


# "%41" would be an "A" if the decoded path were decoded once more.
ESCAPED_DIR = "shop%41: 50% #1"


async def test_a_child_migrates_a_database_whose_path_needs_url_escaping(tmp_path: Path) -> None:
    path = tmp_path / ESCAPED_DIR / "hub.db"
    url = URL.create("sqlite+aiosqlite", database=str(path)).render_as_string()
    db = open_database(url)
    try:
        await migrate(db, in_child=True)
        assert path.exists()
        names = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.iterdir()))
        assert names == [ESCAPED_DIR]  # no second, URL-escaped folder beside it
    finally:
        await db.close()


def _revision_unit(tx: Tx) -> str | None:
    return _revision(tx.conn)


async def test_the_database_opens_the_file_whose_path_needed_url_escaping(
    tmp_path: Path,
) -> None:
    """Database.write/read (on SQLite its own thread and connection) open the same file as
    the engine and the migration did."""
    path = tmp_path / ESCAPED_DIR / "hub.db"
    db = open_database(URL.create("sqlite+aiosqlite", database=str(path)).render_as_string())
    try:
        await migrate(db, in_child=True)
        assert await db.read(_revision_unit) == HEAD
        await db.write(alive)
        names = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.iterdir()))
        assert names == [ESCAPED_DIR]
    finally:
        await db.close()


# --- identities, conversations, messages ------------------------------------------------------


def ghost(localpart: str) -> Callable[[], str]:
    return lambda: localpart


async def test_identity_get_or_create_is_idempotent(db: Database, sessions: Sessions) -> None:
    first = await db.write(
        inbound.identity_conversation, "webchat", "v1", "Ana", ghost("customer_web_aaa")
    )
    assert first.display_name == "Ana"
    assert first.rows is None  # created in that transaction
    again = await db.write(
        inbound.identity_conversation, "webchat", "v1", None, ghost("customer_web_bbb")
    )
    assert (again.identity_id, again.conversation_id) == (
        first.identity_id,
        first.conversation_id,
    )
    assert again.display_name == "Ana"  # None does not erase the known name
    assert again.rows is not None
    identity, conversation = again.rows  # detached rows, as they were found
    assert identity.ghost_localpart == "customer_web_aaa"  # never changes once chosen
    assert (identity.id, conversation.id) == (first.identity_id, first.conversation_id)
    renamed = await db.write(
        inbound.identity_conversation, "webchat", "v1", "Ana B.", ghost("customer_x")
    )
    assert renamed.identity_id == first.identity_id
    assert renamed.display_name == "Ana B."  # a different name replaces the known one
    assert renamed.rows is not None and renamed.rows[0].display_name == "Ana B."
    other = await db.write(
        inbound.identity_conversation, "whatsapp", "v1", "Ana", ghost("customer_wa_c")
    )
    assert other.identity_id != first.identity_id
    assert other.conversation_id != first.conversation_id

    found = await db.read(conversations.identity_by_external_id, "webchat", "v1")
    assert found is not None
    assert (found.display_name, found.ghost_localpart) == ("Ana B.", "customer_web_aaa")
    assert await db.read(conversations.identity_by_external_id, "webchat", "nobody") is None
    assert await count(sessions, ChannelIdentity) == 2
    assert await count(sessions, Customer) == 2
    assert await count(sessions, Conversation) == 2


async def test_conversation_lookups(db: Database, sessions: Sessions) -> None:
    found = await db.write(
        inbound.identity_conversation, "webchat", "v1", "Ana", ghost("customer_web_a")
    )
    again = await db.write(
        inbound.identity_conversation, "webchat", "v1", "Ana", ghost("customer_web_b")
    )
    assert again.conversation_id == found.conversation_id
    await db.write(conversations.set_room, found.conversation_id, ROOM, "Ana (Web chat)")

    by_room = await db.read(conversations.conversation_by_room, ROOM)
    assert by_room is not None and by_room.id == found.conversation_id
    assert by_room.room_name == "Ana (Web chat)"
    assert await db.read(conversations.conversation_by_room, "!other:shop.example") is None
    by_identity = await db.read(conversations.conversation_by_identity, found.identity_id)
    assert by_identity is not None and by_identity.id == found.conversation_id
    of = await db.read(conversations.conversation_of, "webchat", "v1")
    assert of is not None and of.id == found.conversation_id
    assert await db.read(conversations.conversation_of, "webchat", "nobody") is None
    conv, identity = await db.read(conversations.conversation_with_identity, found.conversation_id)
    assert (conv.id, conv.room_id) == (found.conversation_id, ROOM)
    assert (identity.id, identity.external_id) == (found.identity_id, "v1")
    assert await count(sessions, Conversation) == 1


async def _conversation(db: Database, external_id: str = "v1") -> int:
    found = await db.write(
        inbound.identity_conversation,
        "webchat",
        external_id,
        None,
        ghost(f"customer_web_{external_id}"),
    )
    return found.conversation_id


def _insert_all(tx: Tx, rows: list[dict[str, Any]]) -> list[Message | None]:
    return [inbound.insert_message(tx, row) for row in rows]


async def test_insert_message_dedupes_by_channel_and_remote_id(
    db: Database, sessions: Sessions
) -> None:
    conv = await _conversation(db)
    base = {"conversation_id": conv, "direction": "in", "kind": "text"}
    first, dup, elsewhere = await db.write(
        _insert_all,
        [
            {**base, "channel": "webchat", "remote_id": "m1", "text": "hello"},
            {**base, "channel": "webchat", "remote_id": "m1", "text": "again"},
            {**base, "channel": "whatsapp", "remote_id": "m1", "text": "other channel"},
        ],
    )
    assert first is not None and first.text == "hello" and first.status == "pending"
    assert dup is None
    assert elsewhere is not None and elsewhere.id != first.id
    found = await db.read(conversations.message_by_remote_id, "webchat", "m1")
    assert found is not None and found.text == "hello"
    # A later transaction is refused the same way.
    assert await db.write(_insert_all, [{**base, "channel": "webchat", "remote_id": "m1"}]) == [
        None
    ]
    assert await count(sessions, Message) == 2


async def test_insert_message_dedupes_by_matrix_event_id(db: Database, sessions: Sessions) -> None:
    conv = await _conversation(db)
    values = {
        "conversation_id": conv,
        "channel": "webchat",
        "direction": "out",
        "kind": "text",
        "text": "Hi, how can I help?",
        "matrix_event_id": "$event1",
        "sender_mxid": "@anna:shop.example",
    }
    first, dup, second = await db.write(
        _insert_all,
        [values, {**values, "text": "redelivered"}, {**values, "matrix_event_id": "$event2"}],
    )
    assert first is not None and first.matrix_event_id == "$event1"
    assert dup is None
    assert second is not None and second.id != first.id
    found = await db.read(conversations.message_by_event_id, "$event1")
    assert found is not None and found.text == "Hi, how can I help?"
    assert await count(sessions, Message) == 2


async def test_webchat_history_shows_inbound_and_sent_outbound_only(db: Database) -> None:
    conv = await _conversation(db, "v1")
    other = await _conversation(db, "v2")
    rows = [
        ("in", "received", conv),
        ("out", "pending", conv),
        ("out", "sent", conv),
        ("out", "failed", conv),
        ("out", "delivered", conv),
        ("out", "read", conv),
        ("in", "received", other),
    ]
    stored = await db.write(
        _insert_all,
        [
            {
                "conversation_id": conv_id,
                "channel": "webchat",
                "direction": direction,
                "kind": "text",
                "text": f"message {i}",
                "remote_id": f"r{i}",
                "status": status,
            }
            for i, (direction, status, conv_id) in enumerate(rows)
        ],
    )
    ids = [m.id for m in stored if m is not None]
    assert len(ids) == len(rows)
    visible = await db.read(webchat.history, "v1", 0)
    assert [m.text for m in visible] == ["message 0", "message 2", "message 4", "message 5"]
    after = await db.read(webchat.history, "v1", ids[2])
    assert [m.text for m in after] == ["message 4", "message 5"]
    limited = await db.read(webchat.history, "v1", 0, limit=2)
    assert [m.text for m in limited] == ["message 0", "message 2"]
    assert [m.text for m in await db.read(webchat.history, "v2", 0)] == ["message 6"]
    assert await db.read(webchat.history, "nobody", 0) == []


async def test_text_round_trips_any_unicode(db: Database) -> None:
    conv = await _conversation(db)
    text_in = "Grüße 👩\u200d👩\u200d👧 שלום مرحبا \u202eRTL\u202c 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ﷽"
    [msg] = await db.write(
        _insert_all,
        [
            {
                "conversation_id": conv,
                "channel": "webchat",
                "direction": "in",
                "kind": "text",
                "text": text_in,
                "remote_id": "ü-1",
                "media": {"filename": "😀.png"},
            }
        ],
    )
    assert msg is not None
    found = await db.read(conversations.message_by_remote_id, "webchat", "ü-1")
    assert found is not None
    assert (found.text, found.media) == (text_in, {"filename": "😀.png"})


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_two_processes_creating_one_customer_at_once_make_one(
    db: Database, db_url: str, sessions: Sessions
) -> None:
    """PostgreSQL: a second process creating the same identity while the first one's
    transaction is still open waits for it and then uses its rows (ON CONFLICT DO NOTHING).
    An advisory lock holds the first transaction open until the second one waits for it."""
    other = open_database(db_url)  # another hub process
    lock = 4242

    def create_then_hold(tx: Tx) -> inbound.IdentityConversation:
        found = inbound.identity_conversation(tx, "webchat", "v1", "Ana", ghost("customer_web_a"))
        tx.conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({lock})")
        return found

    async def waiting(locktype: str) -> None:
        sql = text("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = :t")
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while True:
            async with db.engine.connect() as conn:
                if (await conn.execute(sql, {"t": locktype})).scalar():
                    return
            assert loop.time() < end, f"nobody waits on a {locktype} lock"
            await asyncio.sleep(0.01)

    tasks: list[asyncio.Task[inbound.IdentityConversation]] = []
    try:
        async with db.engine.connect() as holder:
            await holder.execute(text(f"SELECT pg_advisory_lock({lock})"))
            try:
                tasks.append(asyncio.create_task(db.write(create_then_hold)))
                await waiting("advisory")  # the first one inserted its rows and holds them
                tasks.append(
                    asyncio.create_task(
                        other.write(
                            inbound.identity_conversation,
                            "webchat",
                            "v1",
                            None,
                            ghost("customer_web_b"),
                        )
                    )
                )
                await waiting("transactionid")  # the second one waits on the first's identity
            finally:
                await holder.execute(text(f"SELECT pg_advisory_unlock({lock})"))
            a, b = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await other.close()
    assert (b.identity_id, b.conversation_id) == (a.identity_id, a.conversation_id)
    assert await count(sessions, ChannelIdentity) == 1
    assert await count(sessions, Customer) == 1  # the second one's customer is gone again
    assert await count(sessions, Conversation) == 1
    found = await db.read(conversations.identity_by_external_id, "webchat", "v1")
    assert found is not None
    assert (found.display_name, found.ghost_localpart) == ("Ana", "customer_web_a")


# --- the store path (hub.db.inbound) ----------------------------------------------------------

ANA = Sender("webchat", "visitor-1", "Ana")


async def store(
    db: Database,
    *envelopes: Envelope,
    policy: InboundPolicy = POLICY,
) -> IngestResult:
    """A batch through the one store path, as a webhook or the widget stores it."""
    return await db.write(inbound.store_events, policy, list(envelopes), urgent=True)


async def _inbound(
    db: Database, msg: InboundMessage, sender: Sender = ANA, policy: InboundPolicy = POLICY
) -> tuple[int, int] | None:
    """(message id, conversation id) of a stored message, None for a duplicate."""
    result = await store(db, Envelope(sender, msg), policy=policy)
    if not result.messages:
        assert (result.stored, result.duplicates) == (0, 1)
        return None
    assert (result.stored, result.duplicates) == (1, 0)
    [message] = result.messages
    return message.id, message.conversation_id


async def test_store_message_stores_it_and_queues_its_delivery(
    db: Database, sessions: Sessions
) -> None:
    result = await store(db, Envelope(ANA, InboundMessage("m1", "text", text="Do you ship?")))
    assert (result.stored, result.duplicates, result.statuses, result.ignored) == (1, 0, 0, 0)
    [returned] = result.messages
    message_id, conv_id = returned.id, returned.conversation_id
    async with sessions() as s:
        msg = await s.get(Message, message_id)
    assert msg is not None
    assert columns(returned) == columns(msg)  # the detached row is what was stored
    assert (msg.direction, msg.status, msg.text) == ("in", "received", "Do you ship?")
    assert (msg.channel, msg.remote_id, msg.sender_name) == ("webchat", "m1", "Ana")
    conv, identity = await db.read(conversations.conversation_with_identity, conv_id)
    assert conv.last_inbound_at is not None
    assert identity.ghost_localpart.startswith("customer_web_")
    assert "visitor" not in identity.ghost_localpart  # opaque, not the external id
    assert identity.display_name == "Ana"
    items = await outbox(sessions)
    assert [(i.kind, i.ordering_key, i.payload, i.idempotency_key) for i in items] == [
        (
            MATRIX_DELIVER,
            conversation_key(conv_id),
            {"message_id": message_id},
            f"{MATRIX_DELIVER}/{message_id}",
        )
    ]
    assert (items[0].status, items[0].leased_by) == ("pending", None)  # no worker: claimed


async def test_a_redelivered_message_is_a_duplicate_that_adds_nothing(
    db: Database, sessions: Sessions
) -> None:
    msg = InboundMessage("m1", "text", text="hello")
    first = await _inbound(db, msg)
    assert first is not None
    assert await _inbound(db, msg) is None
    assert await _inbound(db, InboundMessage("m1", "text", text="changed")) is None
    again = await store(db, Envelope(ANA, msg), Envelope(ANA, msg))  # twice in one batch
    assert (again.stored, again.duplicates, again.messages) == (0, 2, [])
    assert await count(sessions, Message) == 1
    assert await count(sessions, OutboxItem) == 1
    assert await count(sessions, ChannelIdentity) == 1
    found = await db.read(conversations.message_by_remote_id, "webchat", "m1")
    assert found is not None and found.text == "hello"
    second = await _inbound(db, InboundMessage("m2", "text", text="second"))
    assert second is not None and second[1] == first[1]  # same conversation
    assert await count(sessions, OutboxItem) == 2


class Boom(RuntimeError):
    pass


def _store_then_fail(tx: Tx, msg: InboundMessage) -> None:
    stored = inbound.store_events(tx, POLICY, [Envelope(ANA, msg)])
    assert stored.stored == 1
    raise Boom("e.g. a later step of the same unit failed")


@pytest.mark.parametrize("urgent", [False, True], ids=["background", "urgent"])
async def test_a_failed_transaction_writes_nothing(
    db: Database, sessions: Sessions, urgent: bool
) -> None:
    msg = InboundMessage("m1", "text", text="x")
    with pytest.raises(Boom):
        await db.write(_store_then_fail, msg, urgent=urgent)
    for model in (Message, OutboxItem, ChannelIdentity, Customer, Conversation):
        assert await count(sessions, model) == 0, model.__name__
    # ... and the redelivery of the same message is then stored, not taken for a duplicate.
    assert await _inbound(db, msg) is not None
    assert await count(sessions, OutboxItem) == 1


async def test_a_failed_unit_in_a_group_commit_takes_nothing_else_down(
    db: Database, sessions: Sessions
) -> None:
    """Urgent writes arriving together share a transaction on an SQLite file, each unit in
    its own savepoint (on PostgreSQL they are separate transactions anyway)."""
    ok = InboundMessage("ok", "text", text="kept")
    outcomes = await asyncio.gather(
        db.write(_store_then_fail, InboundMessage("bad", "text", text="lost"), urgent=True),
        store(db, Envelope(Sender("webchat", "visitor-2", "Bo"), ok)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], Boom)
    assert isinstance(outcomes[1], IngestResult) and outcomes[1].stored == 1
    async with sessions() as s:
        assert list(await s.scalars(select(Message.remote_id))) == ["ok"]
        assert list(await s.scalars(select(ChannelIdentity.external_id))) == ["visitor-2"]
    assert await count(sessions, OutboxItem) == 1
    assert await count(sessions, Customer) == 1


async def test_replies_are_mapped_and_media_kept(db: Database, sessions: Sessions) -> None:
    first = await _inbound(db, InboundMessage("m1", "text", text="a shirt?"))
    media = MediaRef("shirt.jpg", "image/jpeg", 1234, media_id="abc", remote_id="wa-media-1")
    reply = await _inbound(db, InboundMessage("m2", "image", media=media, reply_to_remote_id="m1"))
    orphan = await _inbound(
        db, InboundMessage("m3", "text", text="?", reply_to_remote_id="unknown")
    )
    assert first and reply and orphan
    async with sessions() as s:
        reply_msg = await s.get(Message, reply[0])
        orphan_msg = await s.get(Message, orphan[0])
    assert reply_msg is not None and orphan_msg is not None
    assert reply_msg.reply_to_message_id == first[0]
    expected = asdict(media)
    del expected["sha256"]  # the file's row holds it (none here: not a file of ours)
    assert reply_msg.media == expected
    assert reply_msg.media["filename"] == "shirt.jpg" and reply_msg.media["media_id"] == "abc"
    assert orphan_msg.reply_to_message_id is None
    assert await count(sessions, MediaFile) == 0
    # The reply's delivery is queued like any other, in the conversation's order.
    items = await outbox(sessions, MATRIX_DELIVER)
    assert [i.payload["message_id"] for i in items] == [first[0], reply[0], orphan[0]]
    assert {i.ordering_key for i in items} == {conversation_key(first[1])}


async def test_customers_are_kept_apart(db: Database, sessions: Sessions) -> None:
    # Remote ids are unique per channel (webchat prefixes them with the visitor id).
    a = await _inbound(db, InboundMessage("v1:m1", "text", text="a"))
    b = await _inbound(db, InboundMessage("v2:m1", "text", text="b"), Sender("webchat", "v2"))
    assert a and b and a[1] != b[1]
    async with sessions() as s:
        keys = set(await s.scalars(select(OutboxItem.ordering_key)))
    assert keys == {conversation_key(a[1]), conversation_key(b[1])}
    _, identity_b = await db.read(conversations.conversation_with_identity, b[1])
    assert identity_b.display_name is None


# --- the store path: statuses, blocks, voice notes, uploads -----------------------------------


def _outbound(tx: Tx, conversation_id: int, status: str) -> Message:
    """A message the shop sent to the customer (in a room with its Matrix event)."""
    conversations.set_room(tx, conversation_id, ROOM, "Ana (Web chat)")
    [message] = _insert_all(
        tx,
        [
            {
                "conversation_id": conversation_id,
                "channel": "webchat",
                "direction": "out",
                "kind": "text",
                "text": "Your parcel left today",
                "remote_id": "out-1",
                "matrix_event_id": "$out1",
                "status": status,
            }
        ],
    )
    assert message is not None
    return message


async def _status_of(db: Database, remote_id: str) -> str:
    message = await db.read(conversations.message_by_remote_id, "webchat", remote_id)
    assert message is not None
    return message.status


def status(remote_id: str, value: Any, **more: Any) -> Envelope:
    return Envelope(None, StatusUpdate(remote_id, value, **more))


async def test_statuses_advance_a_sent_message_but_never_back(
    db: Database, sessions: Sessions
) -> None:
    conv = await _conversation(db, ANA.external_id)
    await db.write(_outbound, conv, "sent")

    result = await store(db, status("out-1", "delivered"))
    assert (result.statuses, result.stored) == (1, 0)
    assert await _status_of(db, "out-1") == "delivered"
    assert await outbox(sessions) == []  # only "read" tells the room

    # Out of order in one batch: read, then a late delivered; and statuses of messages
    # the hub does not know (or a customer's message without a sender) change nothing.
    result = await store(
        db,
        status("out-1", "read"),
        status("out-1", "delivered"),
        status("unknown", "read"),
        Envelope(None, InboundMessage("m9", "text", text="who?")),
    )
    assert (result.statuses, result.stored, result.ignored) == (1, 0, 1)
    assert await _status_of(db, "out-1") == "read"
    _, identity = await db.read(conversations.conversation_with_identity, conv)
    [receipt] = await outbox(sessions)  # the customer's ghost reads it in the room
    assert (receipt.kind, receipt.ordering_key) == (MATRIX_RECEIPT_OUT, receipt_key(ROOM))
    assert receipt.payload == {
        "room_id": ROOM,
        "event_id": "$out1",
        "as_user": f"@{identity.ghost_localpart}:shop.example",
    }

    result = await store(db, status("out-1", "delivered"), status("out-1", "read"))
    assert result.statuses == 0
    assert await _status_of(db, "out-1") == "read"
    assert len(await outbox(sessions)) == 1
    assert await count(sessions, Message) == 1


async def test_a_failed_status_is_told_to_the_room_once(db: Database, sessions: Sessions) -> None:
    conv = await _conversation(db, ANA.external_id)
    await db.write(_outbound, conv, "sent")
    failed = status("out-1", "failed", error_code="131047", error_text="the window is closed")
    assert (await store(db, failed)).statuses == 1
    assert await _status_of(db, "out-1") == "failed"
    assert (await store(db, failed)).statuses == 0
    [notice] = await outbox(sessions)
    assert (notice.kind, notice.ordering_key) == (MATRIX_SEND, room_out_key(ROOM))
    content = notice.payload["content"]
    assert content["msgtype"] == "m.notice"
    assert content["body"] == ("⚠️ Not delivered to the customer: the window is closed (131047)")
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": "$out1"}}


async def _meta(db: Database, channel: str, external_id: str) -> dict[str, Any] | None:
    conversation = await db.read(conversations.conversation_of, channel, external_id)
    assert conversation is not None
    return conversation.meta


async def test_a_block_marks_the_conversation_and_tells_its_room(
    db: Database, sessions: Sessions
) -> None:
    conv = await _conversation(db, ANA.external_id)
    await db.write(conversations.set_room, conv, ROOM, "Ana (Web chat)")
    await store(db, Envelope(ANA, BlockChange(blocked=True)))
    assert await _meta(db, "webchat", ANA.external_id) == {"blocked": True}
    notices = await outbox(sessions, MATRIX_SEND)
    assert [(n.ordering_key, n.payload["room_id"]) for n in notices] == [(room_out_key(ROOM), ROOM)]
    assert notices[0].payload["content"]["body"] == (
        "⛔ The customer blocked the shop on Web chat: messages cannot reach them."
    )
    await store(db, Envelope(ANA, BlockChange(blocked=True)))  # told again: nothing new
    assert len(await outbox(sessions, MATRIX_SEND)) == 1
    await store(db, Envelope(ANA, BlockChange(blocked=False)))
    assert await _meta(db, "webchat", ANA.external_id) == {"blocked": False}
    bodies = [n.payload["content"]["body"] for n in await outbox(sessions, MATRIX_SEND)]
    assert bodies[1:] == ["✅ The customer unblocked the shop on Web chat."]

    # A conversation without a room is marked all the same; an unknown customer is not
    # created by a block.
    bo = Sender("webchat", "visitor-2", "Bo")
    await _conversation(db, bo.external_id)
    stranger = Sender("webchat", "visitor-3")
    result = await store(db, Envelope(bo, BlockChange(True)), Envelope(stranger, BlockChange(True)))
    assert (result.stored, result.duplicates, result.ignored) == (0, 0, 0)
    assert await _meta(db, "webchat", bo.external_id) == {"blocked": True}
    assert len(await outbox(sessions, MATRIX_SEND)) == 2
    assert await db.read(conversations.identity_by_external_id, "webchat", "visitor-3") is None
    assert await count(sessions, Conversation) == 2


VOICE_REPLY = "Sorry, we cannot listen to voice notes here: please write to us."


def voice_note(remote_id: str, voice: bool = True) -> InboundMessage:
    media = MediaRef("note.ogg", "audio/ogg", 4000, remote_id=f"media-{remote_id}")
    return InboundMessage(remote_id, "audio", media=media, voice=voice)


async def test_voice_notes_get_one_reply_a_day(db: Database, sessions: Sessions) -> None:
    policy = replace(POLICY, voice_note_reply=VOICE_REPLY)
    first = await _inbound(db, voice_note("v1"), policy=policy)
    assert first is not None
    message_id, conv_id = first
    async with sessions() as s:
        stored = await s.get(Message, message_id)
    assert stored is not None and stored.media is not None and stored.media["voice"] is True
    [send] = await outbox(sessions, CHANNEL_SEND)
    assert send.ordering_key == conversation_key(conv_id)
    async with sessions() as s:
        reply = await s.get(Message, send.payload["message_id"])
    assert reply is not None
    assert (reply.direction, reply.kind, reply.text) == ("out", "text", VOICE_REPLY)
    assert (reply.channel, reply.sender_name, reply.status) == ("webchat", "Shop", "pending")
    assert await outbox(sessions, MATRIX_SEND) == []  # no room yet to tell
    # The delivery of the customer's voice note comes first in the conversation's order.
    kinds = [i.kind for i in await outbox(sessions) if i.ordering_key == conversation_key(conv_id)]
    assert kinds == [MATRIX_DELIVER, CHANNEL_SEND]

    # Within a day: no second reply.
    assert await _inbound(db, voice_note("v2"), policy=policy) is not None
    assert len(await outbox(sessions, CHANNEL_SEND)) == 1

    # A day later: a music file is no voice note, and without a reply text in the policy
    # nothing is sent; the next voice note gets the reply again, now told to the room too.
    await db.write(conversations.set_room, conv_id, ROOM, "Ana (Web chat)")
    yesterday = (utcnow() - timedelta(hours=25)).isoformat()
    await db.write(conversations.set_meta, conv_id, voice_reply_at=yesterday)
    assert await _inbound(db, voice_note("a1", voice=False), policy=policy) is not None
    assert await _inbound(db, voice_note("v3")) is not None
    assert len(await outbox(sessions, CHANNEL_SEND)) == 1
    assert await _inbound(db, voice_note("v4"), policy=policy) is not None
    assert len(await outbox(sessions, CHANNEL_SEND)) == 2
    [notice] = await outbox(sessions, MATRIX_SEND)
    assert notice.payload["content"]["body"] == (
        f"🤖 Sent to the customer (voice note reply): {VOICE_REPLY}"
    )
    assert (await _meta(db, "webchat", ANA.external_id) or {})["voice_reply_at"] > yesterday


UPLOAD = MediaRef("Rechnung ö.pdf", "application/pdf", 2048, media_id="f" * 24, sha256="ab" * 32)


async def test_an_upload_writes_its_file_row_with_the_message(
    db: Database, sessions: Sessions
) -> None:
    stored = await _inbound(db, InboundMessage("up-1", "file", text="my invoice", media=UPLOAD))
    assert stored is not None
    message_id, conv_id = stored
    async with sessions() as s:
        row = await s.get(MediaFile, UPLOAD.media_id)
        message = await s.get(Message, message_id)
    assert row is not None and message is not None
    assert (row.conversation_id, row.filename, row.mimetype, row.size, row.sha256) == (
        conv_id,
        "Rechnung ö.pdf",
        "application/pdf",
        2048,
        "ab" * 32,
    )
    assert row.mxc_uri is None and row.created_at.tzinfo is not None
    assert message.media == {k: v for k, v in asdict(UPLOAD).items() if k != "sha256"}

    # In the same transaction: a store that fails leaves no file row behind.
    other = replace(UPLOAD, media_id="g" * 24)
    with pytest.raises(Boom):
        await db.write(_store_then_fail, InboundMessage("up-2", "file", media=other))
    async with sessions() as s:
        assert list(await s.scalars(select(MediaFile.id))) == [UPLOAD.media_id]


async def test_a_redelivered_upload_adds_no_file_row(db: Database, sessions: Sessions) -> None:
    """The widget retries an upload under the same client id: its file was written again
    under a new media id, but the message is a duplicate and must change nothing."""
    assert await _inbound(db, InboundMessage("up-1", "file", media=UPLOAD)) is not None
    retry = replace(UPLOAD, media_id="h" * 24)
    assert await _inbound(db, InboundMessage("up-1", "file", media=retry)) is None
    async with sessions() as s:
        assert list(await s.scalars(select(MediaFile.id))) == [UPLOAD.media_id]


# --- the job queue with two workers sharing one database --------------------------------------


@contextlib.asynccontextmanager
async def _two_workers(
    db_url: str, make_handler: Callable[[str], Handler]
) -> AsyncIterator[list[Worker]]:
    """Two workers, each with its own Database (as two hub processes would be)."""
    databases = [open_database(db_url), open_database(db_url)]
    config = OutboxConfig(
        concurrency=4, max_attempts=3, base_delay_seconds=60, lease_seconds=600, poll_seconds=0.02
    )
    workers = [
        Worker(database, config, worker_id=f"worker-{i}") for i, database in enumerate(databases)
    ]
    for worker in workers:
        worker.register("test", make_handler(worker.worker_id))
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield workers
    finally:
        for worker in workers:
            await worker.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        for database in databases:
            await database.close()


def _enqueue_jobs(tx: Tx, keys: int, per_key: int) -> None:
    for seq in range(per_key):
        for k in range(keys):
            jobs.enqueue(tx, "test", f"conv:{k}", {"seq": seq}, f"job-{k}-{seq}")


async def test_two_workers_run_every_job_exactly_once_in_key_order(
    db: Database, db_url: str, sessions: Sessions
) -> None:
    keys, per_key = 6, 10
    trace: list[tuple[str, str, int, str]] = []  # (event, key, seq, worker)

    def make_handler(worker_id: str) -> Handler:
        async def handler(job: Job) -> None:
            key, seq = job.ordering_key, job.payload["seq"]
            trace.append(("start", key, seq, worker_id))
            # Stay in flight a little, so the other worker has a chance to interfere.
            await asyncio.sleep(0.01)
            trace.append(("end", key, seq, worker_id))

        return handler

    await db.write(_enqueue_jobs, keys, per_key)
    total = keys * per_key

    async with _two_workers(db_url, make_handler) as workers:
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        while await _done_count(sessions) < total:
            assert loop.time() < end, f"only {await _done_count(sessions)}/{total} done"
            await asyncio.sleep(0.02)
        for worker in workers:
            await worker.drain()

    starts = Counter((key, seq) for event, key, seq, _ in trace if event == "start")
    assert len(starts) == total
    assert set(starts.values()) == {1}, "a job ran twice"
    for k in range(keys):
        events = [(event, seq) for event, key, seq, _ in trace if key == f"conv:{k}"]
        expected = [(e, seq) for seq in range(per_key) for e in ("start", "end")]
        assert events == expected, f"conv:{k} ran out of order or overlapped"
    async with sessions() as s:
        by_worker = Counter(await s.scalars(select(OutboxItem.leased_by)))
        statuses = set(await s.scalars(select(OutboxItem.status)))
    assert statuses == {"done"}
    # The row names the worker that ran the job.
    ran_by = Counter(worker for event, _, _, worker in trace if event == "start")
    assert by_worker == ran_by


async def _done_count(sessions: Sessions) -> int:
    async with sessions() as s:
        n = await s.scalar(
            select(func.count()).select_from(OutboxItem).where(OutboxItem.status == "done")
        )
        return int(n or 0)


# --- the store path's rows, handed straight to a worker ---------------------------------------


def _with_offer(tx: Tx, offer: LeaseOffer | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a unit as a write does when the job worker offers to take its jobs (on an SQLite
    file the Database asks its JobSink; set here on both engines)."""
    tx.offer = offer
    return fn(tx, *args)


async def test_stored_rows_read_back_like_the_orm_reads_them(
    db: Database, sessions: Sessions
) -> None:
    """store_message through Database.write (on SQLite run on the pysqlite connection with
    SQLAlchemy's type processors) returns detached rows equal to what the ORM reads: aware
    datetimes, JSON payloads, and the delivery handed with its job to the offering worker."""
    sender = Sender("webchat", "visitor-1", "Zoë")
    media = MediaRef("Foto ö.png", "image/png", 1234, "m" * 20)

    def message(remote_id: str) -> InboundMessage:
        return InboundMessage(remote_id, "image", text="Farbton 🎨", media=media)

    first = await db.write(
        _with_offer, None, inbound.store_message, POLICY, sender, message("r1")
    )  # creates identity and conversation
    async with sessions.begin() as s:  # its delivery is done: the conversation is free
        await s.execute(update(OutboxItem).values(status="done"))
    offer = LeaseOffer("worker-x", 60, set(), 4)
    second = await db.write(
        _with_offer, offer, inbound.store_message, POLICY, sender, message("r2")
    )
    assert first is not None and second is not None
    async with sessions() as s:
        orm = await s.get(Message, second.id)
        assert orm is not None
        key = f"{MATRIX_DELIVER}/{second.id}"
        job = (await s.scalars(select(OutboxItem).where(OutboxItem.idempotency_key == key))).one()
    conv, identity = await db.read(conversations.conversation_with_identity, second.conversation_id)
    # The detached message returned by the store path equals the stored row.
    assert columns(second) == columns(orm)
    assert orm.media == {k: v for k, v in asdict(media).items() if k != "sha256"}
    assert orm.text == "Farbton 🎨"
    assert orm.created_at.tzinfo is not None
    # The second message's job went to the offering worker, with the delivery rows.
    assert job.leased_by == "worker-x" and job.leased_until is not None
    assert job.payload == {"message_id": second.id}
    assert offer.busy == {conversation_key(conv.id)} and offer.room == 3
    [(row, context)] = offer.taken
    assert row == (job.id, MATRIX_DELIVER, conversation_key(conv.id), job.payload, 0)
    assert isinstance(context, MessageContext)
    assert columns(context.message) == columns(orm)
    assert columns(context.conversation) == columns(conv)
    assert columns(context.identity) == columns(identity)
    assert context.identity.display_name == "Zoë"
    assert context.target is None
    # And what a claimed job reads instead is the same.
    for read in (
        await db.read(messages.message_context, second.id),
        await db.read(_preload, job.payload),
    ):
        assert read is not None
        assert columns(read.message) == columns(context.message)
        assert columns(read.conversation) == columns(context.conversation)
        assert columns(read.identity) == columns(context.identity)
        assert read.target is None


def _preload(tx: Tx, payload: dict[str, Any]) -> MessageContext | None:
    return messages.preload_message(tx.conn, payload)


async def test_a_reply_is_handed_over_without_rows(db: Database, sessions: Sessions) -> None:
    """A reply's delivery needs its target too: the worker takes the job, and reads what it
    needs when it runs it."""
    await _inbound(db, InboundMessage("m1", "text", text="first"))
    async with sessions.begin() as s:  # the first delivery is done: the conversation is free
        await s.execute(update(OutboxItem).values(status="done"))
    offer = LeaseOffer("worker-x", 60, set(), 4)
    reply = await db.write(
        _with_offer,
        offer,
        inbound.store_message,
        POLICY,
        ANA,
        InboundMessage("m2", "text", text="re", reply_to_remote_id="m1"),
    )
    assert reply is not None
    [(row, context)] = offer.taken
    assert (row[1], row[3], context) == (MATRIX_DELIVER, {"message_id": reply.id}, None)
    read = await db.read(messages.message_context, reply.id)
    assert read is not None and read.target is not None and read.target.remote_id == "m1"
    # A job queued while its key is busy is not taken: the worker's chain sees to it.
    busy = LeaseOffer("worker-x", 60, {conversation_key(reply.conversation_id)}, 4)
    third = await db.write(
        _with_offer,
        busy,
        inbound.store_message,
        POLICY,
        ANA,
        InboundMessage("m3", "text", text="again"),
    )
    assert third is not None
    assert busy.taken == [] and busy.missed == [conversation_key(reply.conversation_id)]


async def test_an_advisers_reply_hands_its_send_over_with_the_rows_it_needs(
    db: Database, sessions: Sessions
) -> None:
    """The hot path of a reply: the channel.send job taken by the worker carries the message,
    its conversation, the customer's identity and the replied-to message, equal to what the
    job's own read would give; the conversation records the adviser's reply."""
    found = await db.write(
        inbound.store_message, POLICY, ANA, InboundMessage("c1", "text", text="Blau?")
    )
    assert found is not None
    async with sessions.begin() as s:
        await s.execute(update(Message).values(matrix_event_id="$customer"))
        await s.execute(update(OutboxItem).values(status="done"))
    values = {"kind": "text", "text": "Ja, in Blau.", "matrix_event_id": "$reply"}
    offer = LeaseOffer("worker-x", 60, set(), 4)
    reply = await db.write(
        _with_offer, offer, outbound.adviser_message, found.conversation_id, values, "$customer"
    )
    assert reply is not None and reply.reply_to_message_id == found.id
    [(row, context)] = offer.taken
    assert row[1] == CHANNEL_SEND and row[3] == {"message_id": reply.id}
    read = await db.read(messages.message_context, reply.id)
    assert isinstance(context, MessageContext) and read is not None
    assert columns(context.message) == columns(read.message)
    assert context.identity.external_id == read.identity.external_id == ANA.external_id
    assert context.target is not None and context.target.id == found.id
    assert context.conversation.last_adviser_reply_at is not None
    # The same event handled again adds nothing.
    assert await db.write(outbound.adviser_message, found.conversation_id, values, None) is None


async def test_a_taken_job_without_a_context_gets_its_kinds_preload(db: Database) -> None:
    def preload(conn: Connection, payload: dict[str, Any]) -> str:
        return f"read for {payload['n']}"

    offer = LeaseOffer("worker-x", 60, set(), 4, preloads={"test.kind": preload})

    def queue(tx: Tx) -> None:
        jobs.enqueue(tx, "test.kind", "k1", {"n": 1}, "one")
        jobs.enqueue(tx, "other.kind", "k2", {"n": 2}, "two")

    await db.write(_with_offer, offer, queue)
    assert [context for _, context in offer.taken] == ["read for 1", None]
