"""Database.write on an SQLite file: group commit of urgent writes.

Urgent writes that arrive while the writer lock is held run together in the next
transaction; should a unit or the COMMIT fail, that transaction is rolled back and each unit
runs again alone: only the unit that fails fails. Runs on a throwaway SQLite file with the
real migrations; which transaction a unit ran in is told by the SQLAlchemy transaction
object it saw (kept alive by the test, so two transactions never share an identity).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from hub.db.database import Database, Tx
from hub.db.models import ChannelIdentity, Customer
from hub.db.sqlite import READ_OPTION


def store(tx: Tx, name: str) -> tuple[str, Any]:
    """A unit of work: one row; its result and the transaction it ran in."""
    tx.conn.execute(insert(Customer).values(display_name=name))
    return name.upper(), tx.conn.get_transaction()


def store_then_fail(tx: Tx, name: str) -> None:
    tx.conn.execute(insert(Customer).values(display_name=name))
    raise RuntimeError(f"{name} failed")


def store_dangling(tx: Tx, name: str) -> tuple[str, Any]:
    """A row whose foreign key is only checked at COMMIT, which it fails: the unit itself
    succeeds, its transaction cannot commit."""
    tx.conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    tx.conn.execute(
        insert(ChannelIdentity).values(
            customer_id=999_999, channel="test", external_id=name, ghost_localpart=name
        )
    )
    return store(tx, name)


def store_with_orm(tx: Tx, name: str) -> tuple[str, Any]:
    tx.orm.add(Customer(display_name=name))
    return name.upper(), tx.conn.get_transaction()


def _names(tx: Tx) -> list[str]:
    rows = tx.conn.execute(select(Customer.display_name).order_by(Customer.id)).scalars()
    return [str(name) for name in rows]


async def names(db: Database) -> list[str]:
    return await db.read(_names)


async def committed_names(db: Database) -> list[str]:
    """What another connection sees (not through the database's own thread)."""
    engine = db.engine.execution_options(**{READ_OPTION: True})
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: _names(Tx(c)))


def transactions(results: list[Any]) -> int:
    """How many transactions the (result, transaction) pairs ran in."""
    return len({id(t) for _, t in results})


@contextlib.asynccontextmanager
async def group(db: Database) -> AsyncIterator[None]:
    """Hold the writer lock while the block starts urgent writes: released at the block's
    end, the lock goes to all of them as one group."""
    async with db.writing():
        yield
        for _ in range(3):
            await asyncio.sleep(0)  # the writes started reach the queue


async def test_a_burst_of_urgent_writes_is_stored_in_few_transactions_with_each_result(
    db: Database,
) -> None:
    results = await asyncio.gather(*(db.write(store, f"m{i}", urgent=True) for i in range(16)))
    assert [r for r, _ in results] == [f"M{i}" for i in range(16)]
    assert sorted(await names(db)) == sorted(f"m{i}" for i in range(16))
    assert transactions(results) <= 2


async def test_urgent_writes_waiting_for_the_lock_share_one_transaction_before_the_others(
    db: Database,
) -> None:
    async with group(db):
        background = asyncio.create_task(db.write(store, "background"))
        await asyncio.sleep(0)  # queued first
        urgent = [asyncio.create_task(db.write(store, f"u{i}", urgent=True)) for i in range(5)]
    results = await asyncio.gather(*urgent)
    assert [r for r, _ in results] == [f"U{i}" for i in range(5)]
    assert transactions(results) == 1
    _, own = await background
    assert own is not results[0][1]
    # Someone waits for the urgent ones: they went first although queued later.
    assert await names(db) == ["u0", "u1", "u2", "u3", "u4", "background"]


@pytest.mark.parametrize("n", [1, 3])
async def test_sequential_urgent_writes_each_get_their_own_result_and_transaction(
    db: Database, n: int
) -> None:
    results = [await db.write(store, f"m{i}", urgent=True) for i in range(n)]
    assert [r for r, _ in results] == [f"M{i}" for i in range(n)]
    assert transactions(results) == n


async def test_a_failing_unit_does_not_fail_the_others_of_its_group(db: Database) -> None:
    """The group is rolled back and its units run again one by one: only the failing one's
    caller hears of it."""
    async with group(db):
        first = asyncio.create_task(db.write(store, "first", urgent=True))
        failing = asyncio.create_task(db.write(store_then_fail, "failing", urgent=True))
        last = asyncio.create_task(db.write(store, "last", urgent=True))
    with pytest.raises(RuntimeError, match="failing failed"):
        await failing
    results = [await first, await last]
    assert [r for r, _ in results] == ["FIRST", "LAST"]
    assert transactions(results) == 2  # each ran again alone
    assert await names(db) == ["first", "last"]


def store_duplicate_with_orm(tx: Tx, name: str) -> None:
    existing = tx.conn.execute(select(Customer.id).limit(1)).scalar_one()
    tx.orm.add(Customer(id=existing, display_name=name))
    tx.orm.flush()  # fails: the id is taken


async def test_a_unit_whose_orm_flush_fails_does_not_fail_the_others_of_its_group(
    db: Database,
) -> None:
    await db.write(store, "existing")
    async with group(db):
        first = asyncio.create_task(db.write(store, "first", urgent=True))
        failing = asyncio.create_task(db.write(store_duplicate_with_orm, "dup", urgent=True))
        last = asyncio.create_task(db.write(store, "last", urgent=True))
    with pytest.raises(IntegrityError):
        await failing
    results = [await first, await last]
    assert transactions(results) == 2  # each ran again alone
    assert await names(db) == ["existing", "first", "last"]


async def test_a_failed_commit_fails_only_the_unit_that_cannot_commit(db: Database) -> None:
    async with group(db):
        tasks = [
            asyncio.create_task(db.write(store, "first", urgent=True)),
            asyncio.create_task(db.write(store_dangling, "dangling", urgent=True)),
            asyncio.create_task(db.write(store, "last", urgent=True)),
        ]
    first, dangling, last = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(dangling, Exception) and "FOREIGN KEY" in str(dangling)
    assert [first[0], last[0]] == ["FIRST", "LAST"]  # type: ignore[index]
    assert await committed_names(db) == ["first", "last"]  # the dangling row is not


@pytest.mark.parametrize("grouped", [True, False], ids=["group", "alone"])
async def test_the_next_write_works_after_a_failed_commit(db: Database, grouped: bool) -> None:
    async with group(db):
        tasks = [asyncio.create_task(db.write(store_dangling, "dangling", urgent=True))]
        if grouped:
            tasks.append(asyncio.create_task(db.write(store, "other", urgent=True)))
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[0], Exception)
    assert (await db.write(store, "next", urgent=True))[0] == "NEXT"
    assert (await db.write(store, "background"))[0] == "BACKGROUND"
    expected = ["other", "next", "background"] if grouped else ["next", "background"]
    assert await names(db) == expected


async def test_a_unit_in_a_group_keeps_its_orm_writes(db: Database) -> None:
    async with group(db):
        tasks = [
            asyncio.create_task(db.write(store_with_orm, f"orm{i}", urgent=True)) for i in range(3)
        ]
    results = await asyncio.gather(*tasks)
    assert transactions(results) == 1
    assert await names(db) == ["orm0", "orm1", "orm2"]


async def test_a_unit_alone_keeps_its_orm_writes(db: Database) -> None:
    assert (await db.write(store_with_orm, "alone", urgent=True))[0] == "ALONE"
    assert (await db.write(store_with_orm, "background"))[0] == "BACKGROUND"
    assert await names(db) == ["alone", "background"]


@pytest.mark.parametrize(
    "orm_inside",
    [True, False],
    ids=["orm-used-inside", "core-only"],
)
@pytest.mark.parametrize("urgent", [False, True], ids=["background", "urgent"])
async def test_a_savepoint_undoes_only_its_part_of_the_unit(
    db: Database, orm_inside: bool, urgent: bool
) -> None:
    def unit(tx: Tx) -> None:
        store(tx, "before")
        with contextlib.suppress(RuntimeError), tx.savepoint():
            if orm_inside:
                tx.orm.add(Customer(display_name="inside (orm)"))
                tx.orm.flush()
            store_then_fail(tx, "inside")
        store(tx, "after")

    await db.write(unit, urgent=urgent)
    assert await names(db) == ["before", "after"]
