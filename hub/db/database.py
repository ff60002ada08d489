"""Units of work for the hot path: one transaction, run as one synchronous function.

`Database.write(fn, *args)` runs `fn(conn, *args)` in one write transaction and returns its
result; `read` does the same in a read-only one. `fn` is plain synchronous SQLAlchemy Core on
a `Connection` (the repository functions in hub/db/hot.py), so the same code serves both
engines:

- SQLite (a file): a synchronous pysqlite engine with one connection on one dedicated
  thread. A whole transaction costs one hop to that thread instead of one per DBAPI call
  (aiosqlite), and no ORM bookkeeping. Writers of this process queue on one FIFO
  `asyncio.Lock` (shared with `HubSessions.begin()`), so they are handed over at once instead
  of sleeping in SQLite's busy handler; `busy_timeout` still covers other processes. Reads
  use a deferred BEGIN and take no lock (WAL: readers never block writers).
- PostgreSQL (or an in-memory SQLite): `AsyncConnection.run_sync` on the async engine; no
  lock, several processes stay correct through conditional UPDATEs / ON CONFLICT.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

T = TypeVar("T")

# Execution option marking a read-only connection: a deferred BEGIN instead of IMMEDIATE.
READ_OPTION = "hub_read"


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the widget read history while the outbox writes; foreign keys are off by default.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
    # Let SQLAlchemy's "begin" event issue BEGIN itself (see below).
    dbapi_conn.isolation_level = None


def sqlite_begin(conn: Connection) -> None:
    # A deferred transaction that reads and then writes fails at once with "database is locked"
    # when another writer committed in between; taking the write lock at BEGIN makes writers
    # queue instead. Read-only connections (READ_OPTION) begin deferred and never wait.
    sql = "BEGIN" if conn.get_execution_options().get(READ_OPTION) else "BEGIN IMMEDIATE"
    if conn.dialect.driver == "pysqlite":  # the hot path's thread: straight to the driver
        conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
    else:
        conn.exec_driver_sql(sql)


class Database:
    """The hot path's transactions (see the module docstring); one per engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # FIFO; held by every write transaction of this process on SQLite.
        self.write_lock: WriterLock | None = WriterLock() if self.is_sqlite else None
        self._owner: asyncio.Task[Any] | None = None
        self._sync: Engine | None = None
        self._conns: dict[bool, Connection | None] = {True: None, False: None}
        self._thread: DatabaseThread | None = None
        path = engine.url.database if self.is_sqlite else None
        if path and path != ":memory:" and not path.startswith("file:"):
            self._sync_path: str | None = str(Path(path))
        else:
            self._sync_path = None

    # -- the writer lock (SQLite) -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def writing(self, *, urgent: bool = False) -> AsyncIterator[None]:
        """Hold this process's SQLite write lock (FIFO, urgent writers first); nothing on
        PostgreSQL. A task that holds it already (a write inside a write) does not wait for
        itself."""
        lock = self.write_lock
        task = asyncio.current_task()
        if lock is None or (self._owner is not None and self._owner is task):
            yield
            return
        await lock.acquire(urgent)
        self._owner = task
        try:
            yield
        finally:
            self._owner = None
            lock.release()

    # -- units of work ----------------------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any, urgent: bool = False) -> T:
        """Run `fn(conn, *args)` in one write transaction; committed when it returns.
        `urgent`: somebody waits for the answer (a webhook's acknowledgement, a widget's
        send), so it goes before queued background writes (finishing jobs)."""
        async with self.writing(urgent=urgent):
            if self._sync_path is not None:
                return await self._in_thread(fn, args, write=True)
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` in one read-only transaction (never takes the write lock)."""
        if self._sync_path is not None:
            return await self._in_thread(fn, args, write=False)
        engine = self.engine.execution_options(**{READ_OPTION: True})
        async with engine.connect() as conn:
            return await conn.run_sync(fn, *args)

    async def _in_thread(self, fn: Callable[..., T], args: tuple[Any, ...], *, write: bool) -> T:
        if self._thread is None:
            self._start()
        assert self._thread is not None
        return await self._thread.submit(self._run, fn, args, write)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], write: bool) -> T:
        # The thread's two Connections (a write and a read one, over the same pysqlite
        # connection) stay open: checking one out of the pool per transaction cost more CPU
        # than most of the transactions themselves.
        conn = self._conns[write]
        if conn is None:
            assert self._sync is not None
            conn = self._sync.connect()
            if not write:
                conn.execution_options(**{READ_OPTION: True})
            self._conns[write] = conn
        with conn.begin():
            return fn(conn, *args)

    def _start(self) -> None:
        assert self._sync_path is not None
        self._sync = create_sync_engine(
            f"sqlite:///{self._sync_path}",
            poolclass=StaticPool,  # one connection, only ever used by the one thread
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        event.listen(self._sync, "connect", sqlite_pragmas)
        event.listen(self._sync, "begin", sqlite_begin)
        self._thread = DatabaseThread()
        weakref.finalize(self, _shutdown, self._sync, self._thread)

    def close(self) -> None:
        """Release the SQLite thread and its connection (also done when collected)."""
        if self._sync is not None and self._thread is not None:
            _shutdown(self._sync, self._thread)
        self._sync, self._thread = None, None
        self._conns = {True: None, False: None}


class WriterLock:
    """A FIFO lock with two queues: urgent waiters are handed the lock before the others.
    Hand-over keeps it locked, so nobody can slip in between."""

    def __init__(self) -> None:
        self._locked = False
        self._queues: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())

    def locked(self) -> bool:
        return self._locked

    async def acquire(self, urgent: bool = False) -> None:
        if not self._locked and not any(self._queues):
            self._locked = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue_ = self._queues[0 if urgent else 1]
        queue_.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed the lock just as the waiter was cancelled
            else:
                queue_.remove(future)
            raise

    def release(self) -> None:
        for queue_ in self._queues:
            while queue_:
                future = queue_.popleft()
                if not future.done():
                    future.set_result(None)
                    return
        self._locked = False


class DatabaseThread:
    """One thread running submitted calls in order. Lighter than a ThreadPoolExecutor, whose
    submit (locks, work item, thread accounting) and future chaining cost about as much CPU
    as a hot-path transaction: a call here is one SimpleQueue.put and one
    call_soon_threadsafe back."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="hub-db", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return future

    def call(self, fn: Callable[[], Any], timeout: float) -> None:
        """Run fn on the thread and wait for it (from outside an event loop)."""
        done = concurrent.futures.Future[Any]()
        self._queue.put((None, done, fn, ()))
        done.result(timeout=timeout)

    def stop(self, timeout: float = 5) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, future, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:
                if loop is None:
                    future.set_exception(exc)
                else:
                    loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                if loop is None:
                    future.set_result(result)
                else:
                    loop.call_soon_threadsafe(_settle, future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():  # the caller gave up; the work is done (or rolled back) anyway
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)


def _shutdown(sync: Engine, thread: DatabaseThread) -> None:
    with contextlib.suppress(Exception):
        thread.call(sync.dispose, timeout=5)
    thread.stop()
