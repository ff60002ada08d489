"""How the hub drives an SQLite file: a private detail of hub.db.database.

Why it is not plain aiosqlite + the ORM, and what each piece buys (bench/relay.py and
bench/webhooks.py measure the hot paths this serves):

- One thread, one connection. aiosqlite hops to its thread once per DBAPI call; a unit of
  work here runs whole on this thread: one hop per transaction. The thread is a plain
  thread with a SimpleQueue (a ThreadPoolExecutor's bookkeeping cost as much CPU as a small
  transaction), and its connections stay open (a pool checkout per transaction cost more
  than most transactions).
- A writer lock in the event loop. SQLite has one writer; writers of this process queue on
  a FIFO lock and are handed over at once instead of sleeping in SQLite's busy handler
  (busy_timeout still covers other processes). Writes someone waits for (a webhook's
  acknowledgement, a widget's send) go before background writes (finishing jobs). Every
  write transaction BEGINs IMMEDIATE, so a read-then-write never fails on a lock upgrade;
  reads BEGIN deferred and never wait (WAL).
- Group commit. Urgent writes that arrive while the lock is held run together in the next
  transaction, each in its own SAVEPOINT (one failing unit does not take the others down):
  a burst of webhooks costs about two commits instead of one each.
- Prepared statements (`execute`). The statements of hub.db.statements are compiled once
  and handed straight to pysqlite inside the transaction SQLAlchemy began: SQLAlchemy's
  per-execution machinery cost more than the statement itself on the hot path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import queue
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Dialect, Engine
from sqlalchemy.engine.interfaces import Compiled
from sqlalchemy.pool import StaticPool

T = TypeVar("T")
Unit = Callable[[Connection], T]

# Execution option marking a read-only connection: a deferred BEGIN instead of IMMEDIATE.
READ_OPTION = "hub_read"


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the widget read history while the job queue writes; foreign keys are off by
    # default in SQLite.
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
    # queue instead.
    sql = "BEGIN" if conn.get_execution_options().get(READ_OPTION) else "BEGIN IMMEDIATE"
    if conn.dialect.driver == "pysqlite":
        conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
    else:
        conn.exec_driver_sql(sql)


class SqliteFile:
    """One database file: its thread, its two open connections, its writer lock and the
    group commit of urgent writes."""

    def __init__(self, path: str) -> None:
        self.lock = WriterLock()
        self._owner: asyncio.Task[Any] | None = None
        self._path = path
        self._sync: Engine | None = None
        self._thread: DatabaseThread | None = None
        self._conns: dict[bool, Connection | None] = {True: None, False: None}
        self._waiting: list[tuple[Unit[Any], asyncio.Future[Any]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._finalizer: weakref.finalize[Any, SqliteFile] | None = None

    @contextlib.asynccontextmanager
    async def writing(self, *, urgent: bool = False) -> AsyncIterator[None]:
        """Hold this process's writer lock. A task that holds it already does not wait."""
        task = asyncio.current_task()
        if self._owner is not None and self._owner is task:
            yield
            return
        await self.lock.acquire(urgent)
        self._owner = task
        try:
            yield
        finally:
            self._owner = None
            self.lock.release()

    async def write(self, unit: Unit[T], *, urgent: bool) -> T:
        if urgent:
            return await self._grouped(unit)
        async with self.writing():
            outcome = (await self._call(self._run_group, [unit]))[0]
        result: T = _unwrap(outcome)
        return result

    async def read(self, unit: Unit[T]) -> T:
        return await self._call(self._run_read, unit)

    async def _grouped(self, unit: Unit[T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((unit, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._waiting:
            async with self.writing(urgent=True):
                # Taken once the lock is ours: whatever arrived while we waited joins.
                group, self._waiting = self._waiting, []
                try:
                    outcomes = await self._call(self._run_group, [u for u, _ in group])
                except Exception as exc:  # the commit itself failed: nothing was written
                    outcomes = [(False, exc)] * len(group)
            for (_, future), (ok, value) in zip(group, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            self._start()
        assert self._thread is not None
        return await self._thread.submit(fn, *args)

    def _conn(self, write: bool) -> Connection:
        conn = self._conns[write]
        if conn is None:
            assert self._sync is not None
            conn = self._sync.connect()
            if not write:
                conn.execution_options(**{READ_OPTION: True})
            self._conns[write] = conn
        return conn

    def _run_group(self, units: list[Unit[Any]]) -> list[tuple[bool, Any]]:
        conn = self._conn(True)
        try:
            return self._run_units(conn, units)
        finally:
            # A COMMIT that failed (a deferred constraint, a full disk) may leave SQLite inside
            # the transaction while SQLAlchemy considers it ended: every later BEGIN on this
            # connection would fail. End it here.
            driver = conn.connection.driver_connection
            if driver is not None and driver.in_transaction:
                driver.rollback()

    def _run_units(self, conn: Connection, units: list[Unit[Any]]) -> list[tuple[bool, Any]]:
        if len(units) == 1:  # no savepoint needed: the transaction is the unit's alone
            try:
                with conn.begin():
                    return [(True, units[0](conn))]
            except Exception as exc:
                return [(False, exc)]
        with conn.begin():
            outcomes: list[tuple[bool, Any]] = []
            for unit in units:
                savepoint = conn.begin_nested()
                try:
                    outcomes.append((True, unit(conn)))
                    savepoint.commit()
                except Exception as exc:
                    if savepoint.is_active:  # a failed ORM flush may have rolled it back
                        savepoint.rollback()
                    outcomes.append((False, exc))
            return outcomes

    def _run_read(self, unit: Unit[T]) -> T:
        conn = self._conn(False)
        with conn.begin():
            return unit(conn)

    def _start(self) -> None:
        self._sync = create_engine(
            URL.create("sqlite", database=self._path),  # the path as is: never decoded twice
            poolclass=StaticPool,  # one connection, only ever used by the one thread
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        event.listen(self._sync, "connect", sqlite_pragmas)
        event.listen(self._sync, "begin", sqlite_begin)
        self._thread = DatabaseThread()
        self._finalizer = weakref.finalize(self, _shutdown, self._sync, self._thread)

    def close(self) -> None:
        """Release the thread and its connection (also done when collected)."""
        if self._finalizer is not None:
            self._finalizer()  # runs _shutdown once; never again at collection
            self._finalizer = None
        self._sync, self._thread = None, None
        self._conns = {True: None, False: None}


def _unwrap(outcome: tuple[bool, Any]) -> Any:
    ok, value = outcome
    if not ok:
        raise value
    return value


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
    """One thread running submitted calls in order: one SimpleQueue.put there and one
    call_soon_threadsafe back per call."""

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


# -- prepared statements ------------------------------------------------------------------

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class Prepared:
    """A statement compiled once for the SQLite dialect, with its type conversions."""

    compiled: Compiled
    binds: tuple[Processor, ...]  # by position
    results: tuple[Processor, ...]  # by result column


@functools.cache
def prepare(stmt: Any, keys: tuple[str, ...], dialect: Dialect) -> Prepared | None:
    """`stmt` compiled for the column keys given (INSERTs); None where SQLAlchemy must run
    it itself (Python-side defaults, expanding IN lists)."""
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys else None)
    if compiled.prefetch or any(b.expanding for b in compiled.binds.values()):
        return None
    assert compiled.positiontup is not None
    binds = tuple(
        compiled.binds[k].type.dialect_impl(dialect).bind_processor(dialect)
        for k in compiled.positiontup
    )
    results = tuple(
        c.type.dialect_impl(dialect).result_processor(dialect, None) for c in stmt.exported_columns
    )
    return Prepared(compiled, binds, results)


def execute_prepared(conn: Connection, prep: Prepared, params: Any) -> tuple[list[Any], int]:
    """Run a prepared statement on the connection's pysqlite connection: (rows, rowcount)."""
    compiled: Any = prep.compiled  # a SQLCompiler: positiontup is known once compiled
    values: Any = compiled.construct_params(params)
    args = [
        v if proc is None else proc(v)
        for v, proc in zip(
            [values[k] for k in compiled.positiontup or ()],
            prep.binds,
            strict=True,
        )
    ]
    cur = conn.connection.driver_connection.execute(compiled.string, args)  # type: ignore[union-attr]
    rows = cur.fetchall()
    procs = prep.results
    if rows and any(procs):
        rows = [
            tuple(v if p is None else p(v) for v, p in zip(r, procs, strict=True)) for r in rows
        ]
    return rows, cur.rowcount
