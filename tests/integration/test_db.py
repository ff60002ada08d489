"""Migrations, repositories, the router's inbound transaction and the outbox under two
workers, each on SQLite and on PostgreSQL (fixtures in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
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
from hub.core.outbox import Handler, Job, OutboxWorker, enqueue
from hub.core.router import DELIVER_TO_MATRIX, conversation_key, record_inbound
from hub.core.types import InboundMessage, MediaRef, Sender
from hub.db import repo
from hub.db.engine import _alembic_config, create_engine, migrate, session_factory
from hub.db.models import (
    Base,
    ChannelIdentity,
    Conversation,
    Customer,
    Message,
    OutboxItem,
)
from hub.errors import StartupError

Sessions = async_sessionmaker[AsyncSession]
HEAD = ScriptDirectory.from_config(_alembic_config()).get_current_head()


async def count(sessions: Sessions, model: type[Any]) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


# --- migrations -------------------------------------------------------------------------------


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child-process"])
async def test_migrate_creates_the_schema_on_a_fresh_database(db_url: str, in_child: bool) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
        await migrate(engine, in_child=in_child)
        await migrate(engine, in_child=in_child)  # already at head: nothing to do, no error
        async with engine.connect() as conn:
            tables = await conn.run_sync(_tables)
            assert tables == set(Base.metadata.tables) | {"alembic_version"}
            assert await conn.run_sync(_revision) == HEAD
    finally:
        await engine.dispose()


def _schema_diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, Base.metadata))


async def test_migrations_match_the_models(db_url: str) -> None:
    """A model changed without a migration would make this list non-empty."""
    engine = create_engine(db_url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_schema_diff) == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child-process"])
async def test_a_newer_schema_is_refused(db_url: str, in_child: bool) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
            )
            await conn.execute(text("INSERT INTO alembic_version VALUES ('0042_from_the_future')"))
        with pytest.raises(StartupError) as info:
            await migrate(engine, in_child=in_child)
        message = str(info.value)
        assert not message.startswith("database migration failed")  # refused, not crashed
        assert "0042_from_the_future" in message
        assert "newer" in message
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == {"alembic_version"}  # nothing touched
    finally:
        await engine.dispose()


async def test_a_failing_migration_child_is_reported_not_hidden(tmp_path: Path) -> None:
    """A database the child cannot open: a StartupError with its exit code and stderr tail."""
    (tmp_path / "locked").mkdir()
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'locked'}")  # a directory
    try:
        failed = r"database migration failed \(exit 1\): .*unable to open database file"
        with pytest.raises(StartupError, match=failed):
            await migrate(engine, in_child=True)
    finally:
        await engine.dispose()


async def test_a_migration_failing_in_the_child_names_its_cause(tmp_path: Path) -> None:
    """The parent reports the error line, not the tail of SQLAlchemy's SQL dump."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    try:
        async with engine.begin() as conn:  # a table of the schema, but no alembic_version
            await conn.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
        with pytest.raises(StartupError) as info:
            await migrate(engine, in_child=True)
        assert str(info.value) == (
            "database migration failed (exit 1): OperationalError: table customers already exists"
        )
    finally:
        await engine.dispose()


async def test_a_child_migrates_a_database_whose_path_needs_url_escaping(tmp_path: Path) -> None:
    path = tmp_path / "shop: 50% #1" / "hub.db"
    url = URL.create("sqlite+aiosqlite", database=str(path)).render_as_string()
    engine = create_engine(url)
    try:
        await migrate(engine, in_child=True)
        assert path.exists()
        names = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.iterdir()))
        assert names == ["shop: 50% #1"]  # no second, URL-escaped folder beside it
    finally:
        await engine.dispose()


# --- repositories -----------------------------------------------------------------------------


async def test_get_or_create_identity_is_idempotent(sessions: Sessions) -> None:
    async with sessions.begin() as s:
        first = await repo.get_or_create_identity(s, "webchat", "v1", "Ana", "customer_web_aaa")
    async with sessions.begin() as s:
        again = await repo.get_or_create_identity(s, "webchat", "v1", None, "customer_web_bbb")
        assert again.id == first.id
        assert again.ghost_localpart == "customer_web_aaa"  # never changes once chosen
        assert again.display_name == "Ana"  # None does not erase the known name
    async with sessions.begin() as s:
        renamed = await repo.get_or_create_identity(s, "webchat", "v1", "Ana B.", "customer_x")
        assert renamed.id == first.id
    async with sessions.begin() as s:
        other = await repo.get_or_create_identity(s, "whatsapp", "v1", "Ana", "customer_wa_c")
        assert other.id != first.id
    async with sessions() as s:
        found = await repo.identity_by_external_id(s, "webchat", "v1")
        assert found is not None and found.display_name == "Ana B."
        assert await repo.identity_by_external_id(s, "webchat", "nobody") is None
    assert await count(sessions, ChannelIdentity) == 2
    assert await count(sessions, Customer) == 2


async def test_get_or_create_conversation_is_idempotent(sessions: Sessions) -> None:
    async with sessions.begin() as s:
        identity = await repo.get_or_create_identity(s, "webchat", "v1", "Ana", "customer_web_a")
        conv = await repo.get_or_create_conversation(s, identity.id)
        assert await repo.get_or_create_conversation(s, identity.id) == conv
        conv.room_id = "!room:shop.example"
    async with sessions.begin() as s:
        again = await repo.get_or_create_conversation(s, identity.id)
        assert again.id == conv.id
        by_room = await repo.conversation_by_room(s, "!room:shop.example")
        assert by_room is not None and by_room.id == conv.id
        assert await repo.conversation_by_room(s, "!other:shop.example") is None
        pair = await repo.conversation_with_identity(s, conv.id)
        assert (pair[0].id, pair[1].external_id) == (conv.id, "v1")
    assert await count(sessions, Conversation) == 1


async def _conversation(sessions: Sessions, external_id: str = "v1") -> int:
    async with sessions.begin() as s:
        identity = await repo.get_or_create_identity(
            s, "webchat", external_id, None, f"customer_web_{external_id}"
        )
        return (await repo.get_or_create_conversation(s, identity.id)).id


async def test_insert_message_dedupes_by_channel_and_remote_id(sessions: Sessions) -> None:
    conv = await _conversation(sessions)
    base = {"conversation_id": conv, "direction": "in", "kind": "text"}
    async with sessions.begin() as s:
        first = await repo.insert_message(
            s, {**base, "channel": "webchat", "remote_id": "m1", "text": "hello"}
        )
        assert first is not None and first.text == "hello" and first.status == "pending"
        dup = await repo.insert_message(
            s, {**base, "channel": "webchat", "remote_id": "m1", "text": "again"}
        )
        assert dup is None
        elsewhere = await repo.insert_message(
            s, {**base, "channel": "whatsapp", "remote_id": "m1", "text": "other channel"}
        )
        assert elsewhere is not None and elsewhere.id != first.id
    async with sessions() as s:
        found = await repo.message_by_remote_id(s, "webchat", "m1")
        assert found is not None and found.text == "hello"
    assert await count(sessions, Message) == 2


async def test_insert_message_dedupes_by_matrix_event_id(sessions: Sessions) -> None:
    conv = await _conversation(sessions)
    values = {
        "conversation_id": conv,
        "channel": "webchat",
        "direction": "out",
        "kind": "text",
        "text": "Hi, how can I help?",
        "matrix_event_id": "$event1",
        "sender_mxid": "@anna:shop.example",
    }
    async with sessions.begin() as s:
        first = await repo.insert_message(s, values)
        assert first is not None and first.matrix_event_id == "$event1"
        assert await repo.insert_message(s, {**values, "text": "redelivered"}) is None
        second = await repo.insert_message(s, {**values, "matrix_event_id": "$event2"})
        assert second is not None and second.id != first.id
    async with sessions() as s:
        found = await repo.message_by_event_id(s, "$event1")
        assert found is not None and found.text == "Hi, how can I help?"
    assert await count(sessions, Message) == 2


async def test_visible_messages_shows_inbound_and_sent_outbound_only(sessions: Sessions) -> None:
    conv = await _conversation(sessions)
    other = await _conversation(sessions, "v2")
    rows = [
        ("in", "received", conv),
        ("out", "pending", conv),
        ("out", "sent", conv),
        ("out", "failed", conv),
        ("out", "delivered", conv),
        ("out", "read", conv),
        ("in", "received", other),
    ]
    ids: list[int] = []
    async with sessions.begin() as s:
        for i, (direction, status, conv_id) in enumerate(rows):
            msg = await repo.insert_message(
                s,
                {
                    "conversation_id": conv_id,
                    "channel": "webchat",
                    "direction": direction,
                    "kind": "text",
                    "text": f"message {i}",
                    "remote_id": f"r{i}",
                    "status": status,
                },
            )
            assert msg is not None
            ids.append(msg.id)
    async with sessions() as s:
        visible = await repo.visible_messages(s, conv, 0)
        assert [m.text for m in visible] == ["message 0", "message 2", "message 4", "message 5"]
        after = await repo.visible_messages(s, conv, ids[2])
        assert [m.text for m in after] == ["message 4", "message 5"]
        limited = await repo.visible_messages(s, conv, 0, limit=2)
        assert [m.text for m in limited] == ["message 0", "message 2"]


async def test_text_round_trips_any_unicode(sessions: Sessions) -> None:
    conv = await _conversation(sessions)
    text_in = "Grüße 👩\u200d👩\u200d👧 שלום مرحبا \u202eRTL\u202c 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ﷽"
    async with sessions.begin() as s:
        msg = await repo.insert_message(
            s,
            {
                "conversation_id": conv,
                "channel": "webchat",
                "direction": "in",
                "kind": "text",
                "text": text_in,
                "remote_id": "ü-1",
                "media": {"filename": "😀.png"},
            },
        )
        assert msg is not None
    async with sessions() as s:
        found = await repo.message_by_remote_id(s, "webchat", "ü-1")
        assert found is not None
        assert (found.text, found.media) == (text_in, {"filename": "😀.png"})


# --- router -----------------------------------------------------------------------------------

ANA = Sender("webchat", "visitor-1", "Ana")


async def _inbound(sessions: Sessions, msg: InboundMessage, sender: Sender = ANA) -> Any:
    async with sessions.begin() as s:
        result = await record_inbound(s, sender, msg, ghost_prefix="customer_", channel_code="web")
        return None if result is None else (result.id, result.conversation_id)


async def test_record_inbound_stores_the_message_and_queues_its_delivery(
    sessions: Sessions,
) -> None:
    stored = await _inbound(sessions, InboundMessage("m1", "text", text="Do you ship to Malta?"))
    assert stored is not None
    message_id, conv_id = stored
    async with sessions() as s:
        msg = await s.get(Message, message_id)
        assert msg is not None
        assert (msg.direction, msg.status, msg.text) == ("in", "received", "Do you ship to Malta?")
        assert msg.sender_name == "Ana"
        conv, identity = await repo.conversation_with_identity(s, conv_id)
        assert conv.last_inbound_at is not None
        assert identity.ghost_localpart.startswith("customer_web_")
        assert "visitor" not in identity.ghost_localpart  # opaque, not the external id
        items = (await s.scalars(select(OutboxItem))).all()
    assert [(i.kind, i.ordering_key, i.payload, i.idempotency_key) for i in items] == [
        (
            DELIVER_TO_MATRIX,
            conversation_key(conv_id),
            {"message_id": message_id},
            f"deliver:{message_id}",
        )
    ]


async def test_record_inbound_dedupes_a_redelivered_message(sessions: Sessions) -> None:
    msg = InboundMessage("m1", "text", text="hello")
    first = await _inbound(sessions, msg)
    assert first is not None
    assert await _inbound(sessions, msg) is None
    assert await _inbound(sessions, InboundMessage("m1", "text", text="changed")) is None
    assert await count(sessions, Message) == 1
    assert await count(sessions, OutboxItem) == 1
    assert await count(sessions, ChannelIdentity) == 1
    second = await _inbound(sessions, InboundMessage("m2", "text", text="second"))
    assert second is not None and second[1] == first[1]  # same conversation
    assert await count(sessions, OutboxItem) == 2


async def test_record_inbound_writes_nothing_when_the_transaction_fails(
    sessions: Sessions,
) -> None:
    with pytest.raises(RuntimeError):
        async with sessions.begin() as s:
            stored = await record_inbound(
                s,
                ANA,
                InboundMessage("m1", "text", text="x"),
                ghost_prefix="customer_",
                channel_code="web",
            )
            assert stored is not None
            raise RuntimeError("e.g. the holding-reply decision failed")
    for model in (Message, OutboxItem, ChannelIdentity, Customer, Conversation):
        assert await count(sessions, model) == 0, model.__name__
    # ... and the redelivery of the same message is then recorded, not taken for a duplicate.
    assert await _inbound(sessions, InboundMessage("m1", "text", text="x")) is not None


async def test_record_inbound_maps_replies_and_media(sessions: Sessions) -> None:
    first = await _inbound(sessions, InboundMessage("m1", "text", text="a shirt?"))
    media = MediaRef("shirt.jpg", "image/jpeg", 1234, media_id="abc")
    reply = await _inbound(
        sessions, InboundMessage("m2", "image", media=media, reply_to_remote_id="m1")
    )
    orphan = await _inbound(
        sessions, InboundMessage("m3", "text", text="?", reply_to_remote_id="unknown")
    )
    assert first and reply and orphan
    async with sessions() as s:
        reply_msg = await s.get(Message, reply[0])
        orphan_msg = await s.get(Message, orphan[0])
    assert reply_msg is not None and orphan_msg is not None
    assert reply_msg.reply_to_message_id == first[0]
    assert reply_msg.media == asdict(media)
    assert reply_msg.media["filename"] == "shirt.jpg" and reply_msg.media["media_id"] == "abc"
    assert orphan_msg.reply_to_message_id is None


async def test_record_inbound_keeps_customers_apart(sessions: Sessions) -> None:
    # Remote ids are unique per channel (webchat prefixes them with the visitor id).
    a = await _inbound(sessions, InboundMessage("v1:m1", "text", text="a"))
    b = await _inbound(sessions, InboundMessage("v2:m1", "text", text="b"), Sender("webchat", "v2"))
    assert a and b and a[1] != b[1]
    async with sessions() as s:
        keys = set(await s.scalars(select(OutboxItem.ordering_key)))
    assert keys == {conversation_key(a[1]), conversation_key(b[1])}


# --- the outbox with two workers sharing one database -----------------------------------------


@contextlib.asynccontextmanager
async def _two_workers(
    db_url: str, make_handler: Callable[[str], Handler]
) -> AsyncIterator[list[OutboxWorker]]:
    engines = [create_engine(db_url), create_engine(db_url)]
    config = OutboxConfig(
        concurrency=4, max_attempts=3, base_delay_seconds=60, lease_seconds=600, poll_seconds=0.02
    )
    workers = [
        OutboxWorker(session_factory(engine), config, worker_id=f"worker-{i}")
        for i, engine in enumerate(engines)
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
        for engine in engines:
            await engine.dispose()


async def test_two_workers_run_every_job_exactly_once_in_key_order(
    db_url: str, sessions: Sessions
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

    async with sessions.begin() as s:
        for seq in range(per_key):
            for k in range(keys):
                await enqueue(s, "test", f"conv:{k}", {"seq": seq}, f"job-{k}-{seq}")
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


# --- the hot path's Core statements (SQLite: straight on pysqlite) ----------------------------


async def test_hot_path_rows_read_back_like_the_orm_reads_them(engine: Any) -> None:
    """record_inbound_sync through Database.write (on SQLite executed on the pysqlite
    connection with SQLAlchemy's type processors) stores and returns what the ORM sees:
    aware datetimes, JSON payloads, the delivery rows handed to the worker."""
    from hub.db import hot
    from hub.db.engine import database_of

    sessions = session_factory(engine)
    db = database_of(sessions)
    sender = Sender("web", "visitor-1", "Zoë")
    media = MediaRef("Foto ö.png", "image/png", 1234, "m" * 20)

    def store(conn: Connection, remote_id: str, offer: hot.LeaseOffer | None) -> Any:
        from hub.core.router import record_inbound_sync

        msg = InboundMessage(remote_id, "image", text="Farbton 🎨", media=media)
        return record_inbound_sync(
            conn, sender, msg, ghost_prefix="customer_", channel_code="web", offer=offer
        )

    first = await db.write(store, "r1", None)  # creates identity and conversation
    async with sessions.begin() as s:  # its delivery is done: the conversation is free
        await s.execute(update(OutboxItem).values(status="done"))
    offer = hot.LeaseOffer("worker-x", 60, set(), 4)
    second = await db.write(store, "r2", offer)
    assert first is not None and second is not None
    async with sessions() as s:
        orm = await s.get(Message, second.id)
        assert orm is not None
        conv, identity = await repo.conversation_with_identity(s, second.conversation_id)
        key = f"deliver:{second.id}"
        job = (await s.scalars(select(OutboxItem).where(OutboxItem.idempotency_key == key))).one()
    # The transient message returned by the hot path equals the stored row.
    for column in Message.__table__.columns.keys():
        assert getattr(second, column) == getattr(orm, column), column
    assert orm.media == asdict(media) and orm.text == "Farbton 🎨"
    assert orm.created_at.tzinfo is not None
    # The second message's job went to the offering worker, with the delivery rows.
    assert job.leased_by == "worker-x" and job.payload == {"message_id": second.id}
    [(row, context)] = offer.taken
    assert row == (job.id, DELIVER_TO_MATRIX, conversation_key(conv.id), job.payload, 0)
    assert isinstance(context, hot.Delivery)
    assert context.message.id == second.id
    assert context.conversation.id == conv.id
    assert context.conversation.last_inbound_at == conv.last_inbound_at
    assert context.identity.ghost_localpart == identity.ghost_localpart
    assert context.identity.display_name == "Zoë"
    # And what a claimed job would read instead is the same.
    read = await db.read(hot.delivery, second.id)
    assert read is not None
    for column in Conversation.__table__.columns.keys():
        assert getattr(read.conversation, column) == getattr(context.conversation, column), column
