"""The one way to the database: units of work.

A unit of work is a plain synchronous function `fn(tx, *args)` in a hub.db module; it
reads and writes through `tx` (SQLAlchemy Core statements of hub.db.statements, or the ORM
through `tx.orm`) and may queue jobs (hub.db.jobs.enqueue). Everything outside hub.db runs
units and never writes SQL itself:

    result = await db.write(inbound.store_events, facts, envelopes, urgent=True)
    rows = await db.read(conversations.visible_messages, conversation_id, after_id)

`write` commits when the unit returns (and rolls back when it raises); then, on the event
loop, the jobs it queued are handed to the job worker (the `JobSink`: no caller wakes the
worker by hand) and its after-commit steps run (`tx.after_commit`: tell a widget about rows
only once other readers can see them). `urgent`: someone waits for the answer (a webhook's
acknowledgement), so the write goes before background writes.

The same units serve both engines:
- an SQLite file: its own thread, writer lock, group commit and prepared statements
  (hub.db.sqlite, private to this module);
- PostgreSQL (or an in-memory SQLite): `AsyncConnection.run_sync` on the async engine;
  several processes stay correct through conditional UPDATEs and ON CONFLICT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from hub.db.bus import Bus
from hub.db.sqlite import READ_OPTION, SqliteFile

if TYPE_CHECKING:
    from hub.db.jobs import LeaseOffer

log = logging.getLogger(__name__)
T = TypeVar("T")
# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back
# and may simply run again.
RETRIED_STATES = frozenset({"40P01", "40001"})
RETRIES = 3
AfterCommit = Callable[[], Awaitable[None]]


class Tx:
    """A unit of work's transaction: the connection, the ORM session over it (made on first
    use), the jobs it queued and what must happen once it committed."""

    __slots__ = ("_after", "_orm", "conn", "offer", "queued", "timers")

    def __init__(self, conn: Connection, offer: LeaseOffer | None = None) -> None:
        self.conn = conn
        # The job worker's offer to take jobs queued here straight away (hub.db.jobs).
        self.offer = offer
        self.queued = False  # set by hub.db.jobs.enqueue
        self.timers: list[tuple[int, datetime]] = []  # added by hub.db.timers.add
        self._orm: Session | None = None
        self._after: list[AfterCommit] = []

    @property
    def orm(self) -> Session:
        """An ORM session joined to this transaction; objects stay usable after commit."""
        if self._orm is None:
            # "rollback_only": never a SAVEPOINT of its own. Joined to a transaction that
            # holds other units (a group commit) or a savepoint, the default would open one
            # and roll it back on close(), discarding the unit's ORM writes.
            self._orm = Session(
                bind=self.conn,
                expire_on_commit=False,
                autoflush=True,
                join_transaction_mode="rollback_only",
            )
        return self._orm

    @property
    def orm_active(self) -> bool:
        return self._orm is not None

    def after_commit(self, step: AfterCommit) -> None:
        self._after.append(step)

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the unit that may fail alone: when it raises, its writes and the jobs
        it queued are undone and the rest of the unit goes on."""
        offer, queued = self.offer, self.queued
        mark = offer.mark() if offer is not None else None
        try:
            with self.orm.begin_nested():
                # The session emits its SAVEPOINT lazily, on its first statement: emit it now,
                # or Core writes (and jobs) of a block that never touches the ORM are kept.
                self.orm.connection()
                yield
        except BaseException:
            if offer is not None and mark is not None:
                offer.restore(mark)
            self.queued = queued
            raise

    def _finish(self) -> None:
        if self._orm is not None:
            self._orm.flush()

    def _close(self) -> None:
        if self._orm is not None:
            self._orm.close()
            self._orm = None


class JobSink(Protocol):
    """The job worker, as the database sees it (hub.jobs.worker.Worker)."""

    def offer(self, urgent: bool) -> LeaseOffer | None:
        """Asked on the event loop before a write to an SQLite file: jobs the write queues
        may go straight to the worker (None: they are claimed)."""

    def settled(self, offer: LeaseOffer | None, queued: bool, committed: bool) -> None:
        """A write ended; `queued`: it queued jobs; `committed`: they exist."""


class TimerSink(Protocol):
    """What arms the alarms of timers (hub.scheduler.runner.TimerRunner)."""

    def arm(self, timer_id: int, due_at: datetime) -> None: ...


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.sink: JobSink | None = None
        self.timer_sink: TimerSink | None = None
        path = engine.url.database if self.is_sqlite else None
        file = path and path != ":memory:" and not path.startswith("file:")
        self._file = SqliteFile(str(Path(path))) if file and path else None
        # Messages to the other hub processes of this database (PostgreSQL NOTIFY).
        self.bus = Bus(self)

    @property
    def serialised(self) -> bool:
        """Writers of this process take turns (an SQLite file): "no other pending job of
        this key" stays true until commit, which lets a write hand its jobs over."""
        return self._file is not None

    async def write(
        self, fn: Callable[..., T], *args: Any, urgent: bool = False, **kwargs: Any
    ) -> T:
        """Run `fn(tx, *args, **kwargs)` in one write transaction; committed when it
        returns."""
        sink = self.sink
        offer = sink.offer(urgent) if sink is not None and self._file is not None else None
        start = offer.mark() if offer is not None else None

        def unit(conn: Connection) -> tuple[T, Tx]:
            # May run twice (a group commit runs the units of a failed group again alone):
            # the offer starts from where it was every time.
            if offer is not None and start is not None:
                offer.restore(start)
            tx = Tx(conn, offer)
            try:
                result = fn(tx, *args, **kwargs)
                tx._finish()
                return result, tx
            finally:
                tx._close()

        def orphan(outcome: tuple[bool, Any]) -> None:
            # The caller was cancelled, the unit ran on: jobs it took are leased to the
            # worker and must start.
            if sink is not None and offer is not None:
                ok, value = outcome
                sink.settled(offer, ok and value[1].queued, ok)

        try:
            if self._file is not None:
                result, tx = await self._file.write(unit, urgent=urgent, orphan=orphan)
            else:
                result, tx = await self._write_retrying(unit)
        except asyncio.CancelledError:
            if self._file is None and sink is not None and offer is not None:
                sink.settled(offer, False, False)
            raise  # on an SQLite file `orphan` settles the offer
        except BaseException:
            if sink is not None and offer is not None:
                sink.settled(offer, False, False)
            raise
        if sink is not None and (tx.queued or offer is not None):
            sink.settled(offer, tx.queued, True)
        if self.timer_sink is not None:
            for timer_id, due_at in tx.timers:
                self.timer_sink.arm(timer_id, due_at)
        for step in tx._after:
            try:
                await step()
            except Exception:
                log.exception("an after-commit step failed")
        return result

    async def _write_retrying(self, unit: Callable[[Connection], tuple[T, Tx]]) -> tuple[T, Tx]:
        """One transaction on PostgreSQL, run again when the server broke a deadlock or a
        serialization conflict by rolling it back: with several hub processes, two units
        can take the same rows in opposite orders (two webhooks with the same customers in
        different order). Units run again from the start, as a group commit's do."""
        for attempt in range(1, RETRIES + 1):
            try:
                async with self.engine.begin() as conn:
                    return await conn.run_sync(unit)
            except DBAPIError as exc:
                code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
                if code not in RETRIED_STATES or attempt == RETRIES:
                    raise
                log.warning("database: %s (%s), running the unit again", code, attempt)
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(tx, *args, **kwargs)` in one read-only transaction (never waits for
        writers)."""

        def unit(conn: Connection) -> T:
            tx = Tx(conn)
            try:
                return fn(tx, *args, **kwargs)
            finally:
                tx._close()

        if self._file is not None:
            return await self._file.read(unit)
        engine = self.engine.execution_options(**{READ_OPTION: True})
        async with engine.connect() as conn:
            return await conn.run_sync(unit)

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Hold this process's SQLite writer lock around writes made another way (schema
        migrations through Alembic); nothing on PostgreSQL. Never call `write` inside it:
        the write runs in a task of its own and would wait for this lock."""
        if self._file is None:
            yield
            return
        async with self._file.writing():
            yield

    async def close(self) -> None:
        await self.bus.stop()
        if self._file is not None:
            self._file.close()
        await self.engine.dispose()


def alive(tx: Tx) -> None:
    """The cheapest round trip (the health check)."""
    tx.conn.exec_driver_sql("SELECT 1")
