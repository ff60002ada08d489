"""The SQLite writer lock: FIFO, urgent writers (a client waits for the answer) first."""

from __future__ import annotations

import asyncio

import pytest

from hub.db.sqlite import WriterLock


async def _hold(lock: WriterLock, name: str, order: list[str], urgent: bool = False) -> None:
    await lock.acquire(urgent)
    try:
        order.append(name)
        await asyncio.sleep(0)
    finally:
        lock.release()


async def test_waiters_get_the_lock_in_order_urgent_ones_first() -> None:
    lock = WriterLock()
    order: list[str] = []
    await lock.acquire()  # held: everybody below queues
    tasks = [
        asyncio.create_task(_hold(lock, "job-1", order)),
        asyncio.create_task(_hold(lock, "job-2", order)),
        asyncio.create_task(_hold(lock, "webhook-1", order, urgent=True)),
        asyncio.create_task(_hold(lock, "job-3", order)),
        asyncio.create_task(_hold(lock, "webhook-2", order, urgent=True)),
    ]
    await asyncio.sleep(0)
    assert lock.locked() and order == []
    lock.release()
    await asyncio.gather(*tasks)
    assert order == ["webhook-1", "webhook-2", "job-1", "job-2", "job-3"]
    assert not lock.locked()


async def test_a_cancelled_waiter_neither_keeps_nor_blocks_the_lock() -> None:
    lock = WriterLock()
    order: list[str] = []
    await lock.acquire()
    gone = asyncio.create_task(_hold(lock, "gone", order, urgent=True))
    after = asyncio.create_task(_hold(lock, "after", order))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    lock.release()
    await after
    assert order == ["after"] and not lock.locked()


async def test_a_waiter_cancelled_just_as_it_is_handed_the_lock_passes_it_on() -> None:
    lock = WriterLock()
    order: list[str] = []
    await lock.acquire()
    first = asyncio.create_task(_hold(lock, "first", order))
    second = asyncio.create_task(_hold(lock, "second", order))
    await asyncio.sleep(0)
    lock.release()  # hands the lock to `first`, which has not run yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert order == ["second"] and not lock.locked()
