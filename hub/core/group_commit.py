"""Group commit for webhook batches: whatever arrives while one write transaction runs is
stored together in the next, so a burst of webhooks is acknowledged after about two
transactions instead of queueing one transaction per request behind the writer lock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from hub.db.database import Database

BUSY_SECONDS = 1.0

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class GroupCommit(Generic[Item, Result]):
    """`store(conn, items) -> results` runs in one write for every waiting caller; if the
    transaction fails, every caller of that group gets the error (nothing half-written)."""

    db: Database
    store: Callable[[Connection, list[Item]], list[Result]]
    urgent: bool = False  # callers wait to answer a request (see Database.write)
    # While items come in bursts (the last group, stored less than BUSY_SECONDS ago, held
    # several), the first item of a new burst waits this long for the rest of it, so the
    # burst is stored, and then delivered, together: Synapse persists events that arrive
    # together in one batch and pushes them in fewer /sync responses and appservice
    # transactions (about a fifth less Synapse CPU per message in bench/relay.py). Items
    # arriving one by one, or after a quiet spell, are stored at once. As PostgreSQL's
    # commit_delay, which also applies only while other transactions are active.
    window: float = 0.0
    _waiting: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)
    _flushing: asyncio.Task[None] | None = None
    _last_stored: float = float("-inf")
    _last_size: int = 0

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        if self.window and self._last_size > 1 and loop.time() - self._last_stored < BUSY_SECONDS:
            await asyncio.sleep(self.window)
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
            self._last_stored, self._last_size = loop.time(), len(group)
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
