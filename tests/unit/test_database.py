"""Group commit: concurrent callers share write transactions; a failure reaches them all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub.core.group_commit import GroupCommit, store_each


class FakeDatabase:
    """Runs the store function like Database.write, one transaction at a time."""

    def __init__(self, fail: bool = False) -> None:
        self.transactions: list[list[Any]] = []
        self.fail = fail
        self._lock = asyncio.Lock()

    async def write(self, fn: Any, items: list[Any], urgent: bool = False) -> Any:
        async with self._lock:
            await asyncio.sleep(0.01)  # a transaction takes a while: others queue up
            self.transactions.append(list(items))
            if self.fail:
                raise RuntimeError("disk full")
            return fn(None, items)


async def test_a_burst_is_stored_in_few_transactions_with_each_result() -> None:
    db = FakeDatabase()
    group: GroupCommit[int, int] = GroupCommit(db, store_each(lambda _c, x: x * 10))  # type: ignore[arg-type]
    results = await asyncio.gather(*(group.submit(i) for i in range(16)))
    assert results == [i * 10 for i in range(16)]
    assert sorted(x for t in db.transactions for x in t) == list(range(16))
    assert len(db.transactions) <= 2


async def test_a_failed_transaction_fails_every_caller_of_its_group() -> None:
    db = FakeDatabase(fail=True)
    group: GroupCommit[int, int] = GroupCommit(db, store_each(lambda _c, x: x))  # type: ignore[arg-type]
    outcomes = await asyncio.gather(*(group.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    db.fail = False
    assert await group.submit(7) == 7  # the next group works again


@pytest.mark.parametrize("n", [1, 3])
async def test_sequential_callers_each_get_their_own_result(n: int) -> None:
    db = FakeDatabase()
    group: GroupCommit[str, str] = GroupCommit(db, store_each(lambda _c, x: x.upper()))  # type: ignore[arg-type]
    for i in range(n):
        assert await group.submit(f"m{i}") == f"M{i}"
