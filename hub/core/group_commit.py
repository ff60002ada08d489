"""Group commit for webhook batches and web-chat texts: whatever arrives while one write
transaction runs is stored together in the next, so a burst is acknowledged after about two
transactions instead of queueing one transaction per request behind the writer lock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from hub.db.database import Database

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class GroupCommit(Generic[Item, Result]):
    """`store(conn, items) -> results` runs in one write for every waiting caller; if the
    transaction fails, every caller of that group gets the error (nothing half-written)."""

    db: Database
    store: Callable[[Connection, list[Item]], list[Result]]
    urgent: bool = False  # callers wait to answer a request (see Database.write)
    _waiting: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)
    _flushing: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                results = await self.db.write(
                    self.store, [item for item, _ in group], urgent=self.urgent
                )
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)


def store_each(
    fn: Callable[[Connection, Any], Result],
) -> Callable[[Connection, list[Any]], list[Result]]:
    """Adapt a one-item store function to a group."""

    def store(conn: Connection, items: list[Any]) -> list[Result]:
        return [fn(conn, item) for item in items]

    return store
