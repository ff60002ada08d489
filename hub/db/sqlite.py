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
  transaction (should one fail, each runs again alone, so it takes no other down): a burst
  of webhooks costs about two commits instead of one each.
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
Outcome = tuple[bool, Any]  # (True, the unit's result) or (False, the exception)
# Told the outcome of a unit whose caller was cancelled after it was handed over.
Orphan = Callable[[Outcome], None]

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
        self._waiting: list[tuple[Unit[Any], asyncio.Future[Any], Orphan]] = []
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

    async def write(self, unit: Unit[T], *, urgent: bool, orphan: Orphan) -> T:
        """Run `unit` in a write transaction. Once a unit is handed to the thread it runs to
        its end: when the caller is cancelled, `orphan` gets its outcome instead (on the
        loop, once the transaction ended; (False, CancelledError) if it never ran)."""
        if urgent and (self.lock.locked() or self._waiting):
            return await self._grouped(unit, orphan)
        try:
            await self.lock.acquire(urgent)
        except asyncio.CancelledError:
            orphan((False, asyncio.CancelledError()))
            raise
        try:
            outcome = (await self._handed(self._submit(self._run_group, [unit]), orphan))[0]
        finally:
            self.lock.release()
        result: T = _unwrap(outcome)
        return result

    async def read(self, unit: Unit[T]) -> T:
        return await self._submit(self._run_read, unit)

    @staticmethod
    async def _handed(future: asyncio.Future[list[Outcome]], orphan: Orphan) -> list[Outcome]:
        try:
            # A future (not a task) shielded: the thread's result still arrives when the
            # caller is cancelled, and is handed to `orphan`.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda f: orphan(_first(f)))
            raise

    async def _grouped(self, unit: Unit[T], orphan: Orphan) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((unit, future, orphan))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await future  # cancelled: _flush still runs the unit and tells `orphan`

    async def _flush(self) -> None:
        while self._waiting:
            await self.lock.acquire(urgent=True)
            try:
                # Taken once the lock is ours: whatever arrived while we waited joins.
                group, self._waiting = self._waiting, []
                try:
                    outcomes = await self._submit(self._run_group, [u for u, _, _ in group])
                except Exception as exc:  # the commit itself failed: nothing was written
                    outcomes = [(False, exc)] * len(group)
            finally:
                self.lock.release()
            for (_, future, orphan), outcome in zip(group, outcomes, strict=True):
                if future.done():  # the caller was cancelled
                    orphan(outcome)
                elif outcome[0]:
                    future.set_result(outcome[1])
                else:
                    future.set_exception(outcome[1])

    def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._thread is None:
            self._start()
        assert self._thread is not None
        return self._thread.submit(fn, *args)

    def _conn(self, write: bool) -> Connection:
        conn = self._conns[write]
        if conn is None:
            assert self._sync is not None
            conn = self._sync.connect()
            if not write:
                conn.execution_options(**{READ_OPTION: True})
            self._conns[write] = conn
        return conn

    def _run_group(self, units: list[Unit[Any]]) -> list[Outcome]:
        """All units in one transaction. Should one of them (or the COMMIT) fail, that
        transaction is rolled back and each unit runs again in a transaction of its own, so
        one failing unit takes no other down. (Units are re-runnable: they only touch the
        database.) A SAVEPOINT per unit would isolate them too, but costs every unit of
        every group."""
        conn = self._conn(True)
        if len(units) > 1:
            try:
                with conn.begin():
                    results = [unit(conn) for unit in units]
            except Exception:
                _end_open(conn)
            else:
                return [(True, result) for result in results]
        outcomes: list[Outcome] = []
        for unit in units:
            try:
                with conn.begin():
                    result = unit(conn)
            except Exception as exc:  # the unit's or its COMMIT's
                _end_open(conn)
                outcomes.append((False, exc))
            else:
                outcomes.append((True, result))
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


def _end_open(conn: Connection) -> None:
    """A COMMIT that failed (a deferred constraint, a full disk) may leave SQLite inside the
    transaction while SQLAlchemy considers it ended: every later BEGIN on this connection
    would fail. End it."""
    driver = conn.connection.driver_connection
    if driver is not None and driver.in_transaction:
        driver.rollback()


def _first(done: asyncio.Future[list[Outcome]]) -> Outcome:
    if done.cancelled():
        return (False, asyncio.CancelledError())
    exc = done.exception()
    return (False, exc) if exc is not None else done.result()[0]


def _unwrap(outcome: Outcome) -> Any:
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
