"""Several hub processes on one database, as the database sees them: two `Database` objects
on one PostgreSQL database are two processes (each its own engine, pool and listener).

- the bus: what one publishes reaches the other's handlers (LISTEN/NOTIFY), large payloads
  through the spill table, never back to the publisher; on SQLite only the local handlers;
- claims: two workers claiming at once lease disjoint jobs and never two of one key;
- one conversation stays in order: stores of one conversation from two processes commit
  in the order of their jobs' ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from hub.commerce.catalogue import Product
from hub.commerce.money import Money
from hub.db import assignments, conversations, jobs
from hub.db.bus import MAX_INLINE_BYTES
from hub.db.commerce import load_products, replace_catalogue
from hub.db.database import Database, Tx
from hub.db.engine import migrate, open_database
from hub.db.identities import identity_conversation
from hub.db.locks import ProcessLock
from hub.db.models import Conversation


@pytest.fixture
async def second(db_url: str, db: Database) -> AsyncIterator[Database]:
    """Another process's view of the same (already migrated) database."""
    other = open_database(db_url)
    try:
        yield other
    finally:
        await other.close()


async def _started(*dbs: Database) -> None:
    for d in dbs:
        await d.bus.start()
    if not dbs[0].is_sqlite:
        await asyncio.gather(*(asyncio.wait_for(d.bus.listening.wait(), 10) for d in dbs))


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def test_bus_reaches_the_other_process(db: Database, second: Database) -> None:
    seen_here: list[dict[str, Any]] = []
    seen_there: list[dict[str, Any]] = []

    async def here(p: dict[str, Any]) -> None:
        seen_here.append(p)

    async def there(p: dict[str, Any]) -> None:
        seen_there.append(p)

    db.bus.subscribe("t", here)
    second.bus.subscribe("t", there)
    await _started(db, second)
    big = {"text": "Grüße 👋 " * (MAX_INLINE_BYTES // 8), "n": 2}
    await db.bus.publish("t", {"n": 1, "text": "Hallo „Welt“"})
    await db.bus.publish("t", big)
    await db.bus.publish("other-topic", {"n": 3})
    # The publisher's own handlers run at once, exactly once each.
    assert [p["n"] for p in seen_here] == [1, 2]
    if db.is_sqlite:
        await asyncio.sleep(0.2)
        assert seen_there == []  # one process per SQLite file: nobody else to tell
        return
    await _until(lambda: len(seen_there) == 2)
    assert seen_there[0] == {"n": 1, "text": "Hallo „Welt“"}
    assert seen_there[1] == big  # spilled: over NOTIFY's limit
    await asyncio.sleep(0.2)
    assert [p["n"] for p in seen_here] == [1, 2]  # its own notifications are skipped
    assert len(seen_there) == 2


async def test_two_processes_claim_disjoint_jobs(db: Database, second: Database) -> None:
    def queue(tx: Tx) -> None:
        for i in range(60):
            jobs.enqueue(tx, "t", f"k{i % 10}", {"i": i}, f"j{i}")

    await db.write(queue)
    got_a, got_b = await asyncio.gather(
        db.write(jobs.claim, "worker-a", 20, frozenset(), 60),
        second.write(jobs.claim, "worker-b", 20, frozenset(), 60),
    )
    ids_a = {r[0] for r in got_a}
    ids_b = {r[0] for r in got_b}
    assert not ids_a & ids_b
    keys = [r[2] for r in got_a + got_b]
    assert len(keys) == len(set(keys))  # one job per key at a time, across both
    assert len(keys) == 10  # each of the ten keys' head is leased by exactly one


async def test_stores_of_one_conversation_commit_in_id_order(
    db: Database, second: Database
) -> None:
    """A store of a conversation's message waits for another process's store of the same
    conversation to commit, so the later commit gets the larger job id (PostgreSQL; an
    SQLite file has one writer at a time anyway)."""
    if db.is_sqlite:
        pytest.skip("one writer at a time on an SQLite file")
    await db.write(identity_conversation, "whatsapp", "4915100000001", "Kim", lambda: "g1")

    def store(tx: Tx, who: str) -> int:
        found = identity_conversation(tx, "whatsapp", "4915100000001", None, lambda: "g1")
        key = jobs.conversation_key(found.conversation_id)
        job = jobs.enqueue(tx, "test.deliver", key, {}, who)
        assert job is not None
        return job

    async with db.engine.begin() as conn:  # the first process, its transaction still open
        first_job = await conn.run_sync(lambda c: store(Tx(c), "first"))
        later = asyncio.create_task(second.write(store, "second"))
        await asyncio.sleep(0.5)
        assert not later.done()  # waits for the conversation's row
    second_job = await asyncio.wait_for(later, 10)
    assert first_job < second_job
    head = await db.write(jobs.claim, "w", 10, frozenset(), 60)
    assert [r[0] for r in head] == [first_job]


async def test_a_process_lock_has_one_holder(db: Database, second: Database) -> None:
    """What keeps a second encrypting hub process from starting (hub.app.start_crypto)."""
    mine, theirs = ProcessLock(db, "crypto"), ProcessLock(second, "crypto")
    assert await mine.try_acquire()
    if db.is_sqlite:
        assert await theirs.try_acquire()  # one process per SQLite file: nothing to guard
        return
    assert not await theirs.try_acquire()
    another = ProcessLock(second, "another")
    assert await another.try_acquire()
    await another.release()
    await mine.release()  # as when the holder's connection ends (its process died)
    assert await theirs.try_acquire()
    await theirs.release()


async def test_processes_starting_together_migrate_and_load_once(db_url: str) -> None:
    """Two hub processes started at once on an empty database: both come up, the schema is
    migrated once, and both loading the configured catalogue leaves it whole."""
    first, other = open_database(db_url), open_database(db_url)
    products = [
        Product(sku=f"LACK-{n}", name=f"Lack {n}", price=Money(1999, "EUR"), vat_rate=Decimal("19"))
        for n in range(50)
    ]
    try:
        # Each in a child process, as `hub run` migrates (Alembic's module state is one per
        # process). Without the lock they collide on PostgreSQL: fail instead of hanging.
        await asyncio.wait_for(
            asyncio.gather(migrate(first, in_child=True), migrate(other, in_child=True)), 120
        )
        counts = await asyncio.gather(
            first.write(replace_catalogue, products), other.write(replace_catalogue, products)
        )
        assert list(counts) == [50, 50]
        assert len(await first.read(load_products)) == 50
    finally:
        await first.close()
        await other.close()


async def test_meta_written_at_once_by_two_units_keeps_both(db: Database) -> None:
    """The store path writes a conversation's `meta` (the voice-note reply's date) with the
    row held; a room-label job writing `meta` at the same time must not write back a `meta`
    read before that commit (PostgreSQL: a lost date meant a second voice-note reply)."""

    def setup(tx: Tx) -> int:
        found = identity_conversation(tx, "whatsapp", "4915100000002", "Kim", lambda: "g2")
        return found.conversation_id

    cid = await db.write(setup)
    if db.is_sqlite:
        pytest.skip("one writer at a time on an SQLite file")

    def store_like(tx: Tx) -> None:
        identity_conversation(tx, "whatsapp", "4915100000002", None, lambda: "g2")  # row held
        conversations.set_meta(tx, cid, voice_reply_at="2026-12-04T08:22:26")

    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: store_like(Tx(c)))
        label = asyncio.create_task(db.write(assignments.set_label, cid, "WhatsApp · Kim · 👤"))
        await asyncio.sleep(0.5)
        assert not label.done()
    await asyncio.wait_for(label, 10)
    meta = await db.read(lambda tx: dict(tx.orm.get(Conversation, cid).meta or {}))
    assert meta == {"voice_reply_at": "2026-12-04T08:22:26", "room_label": "WhatsApp · Kim · 👤"}


async def test_a_deadlock_between_two_processes_is_run_again(
    db: Database, second: Database
) -> None:
    """Two units taking the same rows in opposite orders: PostgreSQL rolls one back
    (deadlock_detected) and the database runs it again; both end committed."""
    if db.is_sqlite:
        pytest.skip("one writer at a time on an SQLite file")

    def make(tx: Tx, n: int) -> int:
        return identity_conversation(
            tx, "whatsapp", f"49151000000{n}", None, lambda: f"d{n}"
        ).conversation_id

    first_id, second_id = await db.write(make, 1), await db.write(make, 2)
    runs: list[str] = []

    def lock_both(tx: Tx, name: str, order: tuple[int, int]) -> str:
        runs.append(name)
        for n, cid in enumerate(order):
            tx.conn.execute(
                text("SELECT id FROM conversations WHERE id = :c FOR UPDATE"), {"c": cid}
            )
            if n == 0:
                tx.conn.execute(text("SELECT pg_sleep(0.3)"))
        return name

    done = await asyncio.wait_for(
        asyncio.gather(
            db.write(lock_both, "a", (first_id, second_id)),
            second.write(lock_both, "b", (second_id, first_id)),
        ),
        30,
    )
    assert list(done) == ["a", "b"]
    assert len(runs) == 3  # one of them ran twice


async def test_a_running_job_keeps_its_lease(db: Database, second: Database) -> None:
    """A worker extends the leases of the jobs it still runs (hub.jobs.worker): another
    process must not claim a job that outlived its first lease."""
    await db.write(lambda tx: jobs.enqueue(tx, "t", "slow", {}, "slow-1"))
    [row] = await db.write(jobs.claim, "worker-a", 1, frozenset(), 0.5)
    assert await db.write(jobs.extend_leases, "worker-b", [row[0]], 60) == 0  # not its job
    assert await db.write(jobs.extend_leases, "worker-a", [row[0]], 60) == 1
    await asyncio.sleep(0.8)  # the first lease would have run out
    assert await second.write(jobs.claim, "worker-b", 5, frozenset(), 60) == []


async def test_a_process_lock_lost_with_its_connection_is_noticed(
    db: Database, second: Database
) -> None:
    if db.is_sqlite:
        pytest.skip("one process per SQLite file")
    mine = ProcessLock(db, "crypto")
    assert await mine.try_acquire()
    stopped: list[bool] = []
    keeper = asyncio.create_task(mine.keep(lambda: stopped.append(True), every=0.2))
    await asyncio.sleep(0.5)
    assert not stopped  # held: nothing to do

    async def cut(tx_db: Database) -> None:  # the server ends the holder's connection
        await tx_db.write(
            lambda tx: tx.conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
                )
            )
        )

    theirs = ProcessLock(second, "crypto")
    await cut(second)
    assert await theirs.try_acquire()  # freed with the connection: another process has it
    await asyncio.wait_for(keeper, 10)
    assert stopped == [True]
    await theirs.release()
