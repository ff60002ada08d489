"""The one durable job queue: every effect that must happen goes through here.

Jobs are rows written in the same transaction as the state change that causes them
(`enqueue`). A worker leases due jobs, runs the handler registered for their kind and marks
them done in one transaction with the handler's own DB writes (`Finish`). Jobs sharing an
ordering key (a conversation, a room) run strictly one after another in id order, so a retry
never reorders a chat. Leases are taken with a conditional UPDATE, which stays correct with
several hub processes on one PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from hub.config import OutboxConfig
from hub.db import hot
from hub.db.database import Database
from hub.db.engine import database_of
from hub.db.models import InboxTransaction, OutboxItem, utcnow
from hub.db.upsert import insert_ignore
from hub.errors import ExternalError

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 3600
BURST_WAIT = 0.01  # at most this long a handed-over job waits for the rest of its burst
DONE_RETENTION_DAYS = 7
DEAD_RETENTION_DAYS = 30

# What must happen once the job's transaction committed (notify a widget, ...).
AfterCommit = Callable[[], Awaitable[None]]
# A handler's DB writes, run in the transaction that marks its job done; it may return an
# AfterCommit (telling anyone about those writes before they commit would race readers).
Finish = Callable[[AsyncSession], Awaitable[AfterCommit | None]]


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    ordering_key: str
    payload: dict[str, Any]
    attempts: int  # attempts made before this one
    # What the queuing transaction knew that the handler would otherwise read back (a job
    # taken through a LeaseOffer); None for claimed jobs. Handlers check its type.
    context: Any = field(default=None, compare=False, repr=False)


Handler = Callable[[Job], Awaitable["Finish | SqlFinish | None"]]
# (connection, payload) -> a job's context, read in the transaction that leases it.
Preload = Callable[[Connection, dict[str, Any]], Any]
# Called once a job is dead-lettered: (job, human reason, machine code or None).
DeadHandler = Callable[[Job, str, str | None], Awaitable[None]]


class RetryLater(Exception):
    """A temporary failure; `delay` (seconds) overrides the backoff, e.g. from retry_after."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class PermanentFailure(Exception):
    """Retrying cannot help; the job is dead-lettered and its dead handler tells a human.
    `code` lets the dead handler react to specific failures (e.g. "blocked")."""

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.code = code


def _local_prefix() -> str:
    """Host and PID namespace: workers whose id starts with this run on this machine, where
    whether their process still lives can be checked."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]
    try:
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pidns = 0
    return f"{host}.{pidns}."


def default_worker_id() -> str:
    """ "<host>.<pid namespace>.<pid>.<random>": unique, and tells a restarted hub which
    leases belong to a process of this machine that died (kill -9, power loss)."""
    return f"{_local_prefix()}{os.getpid()}.{secrets.token_hex(3)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    try:  # a zombie (killed, not yet reaped by its parent) runs nothing any more
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2 :][:1] != "Z"
    except (OSError, ValueError):
        return True


def backoff_delay(attempts: int, base: float, cap: float, jitter: float = 0.2) -> float:
    """Exponential backoff with jitter, so jobs failing together do not retry together."""
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    return min(cap, delay * (1 + random.uniform(-jitter, jitter)))


async def enqueue(
    session: AsyncSession,
    kind: str,
    ordering_key: str,
    payload: dict[str, Any],
    idempotency_key: str,
    *,
    delay: float = 0,
) -> bool:
    """Add a job inside the caller's transaction; a known idempotency key adds nothing."""
    return await insert_ignore(
        session,
        OutboxItem,
        hot.job_row(kind, ordering_key, payload, idempotency_key, delay),
        ["idempotency_key"],
    )


@dataclass(frozen=True)
class SqlFinish:
    """A handler's DB writes as a synchronous Core function (hub.db.hot), run in the same
    transaction that marks the job done; `after` runs once that committed (notifications)."""

    run: Callable[[Connection], None]
    after: AfterCommit | None = None


@dataclass
class OutboxWorker:
    sessions: async_sessionmaker[AsyncSession]
    config: OutboxConfig
    handlers: dict[str, Handler] = field(default_factory=dict)
    dead_handlers: dict[str, DeadHandler] = field(default_factory=dict)
    preloads: dict[str, Preload] = field(default_factory=dict)
    worker_id: str = field(default_factory=default_worker_id)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _inflight: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # by ordering key
    # The last claim filled every free slot: more jobs may be due once one finishes.
    _backlog: bool = True
    _claiming: bool = False  # between a claim's commit and its tasks' start
    _changes: int = 0  # counts claims and finished jobs (for drain)
    _stopping: bool = False
    _offers_out: int = 0  # handover() blocks running: stores that may hand over jobs
    _gate: asyncio.Event | None = None  # see _burst_gate
    _missed_keys: set[str] = field(default_factory=set)  # see _adopt

    def register(
        self,
        kind: str,
        handler: Handler,
        on_dead: DeadHandler | None = None,
        preload: Preload | None = None,
    ) -> None:
        """`preload(conn, payload)`: what the handler reads first, read for a job of this
        kind in the transaction that finishes the previous job of its key and leases this
        one; the handler gets it as `Job.context` (one read transaction less per job of a
        busy conversation)."""
        if kind in self.handlers:
            raise ValueError(f"outbox handler for {kind!r} registered twice")
        self.handlers[kind] = handler
        if on_dead is not None:
            self.dead_handlers[kind] = on_dead
        if preload is not None:
            self.preloads[kind] = preload

    def wake(self) -> None:
        """Call after committing new jobs so they start without waiting for the poll."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def handover(self, db: Database) -> AsyncIterator[hot.LeaseOffer | None]:
        """An offer to pass to a transaction that queues jobs (hot.LeaseOffer), None where
        jobs must be claimed (PostgreSQL). When the block ends normally (the transaction
        committed), the jobs it took start and the worker is woken for anything else it
        queued; on an error nothing starts (the transaction rolled back)."""
        offer = None
        if db.write_lock is not None and not self._stopping:
            room = self.config.concurrency - len(self._inflight)
            if room > 0:
                offer = hot.LeaseOffer(
                    self.worker_id, self.config.lease_seconds, set(self._inflight), room
                )
        self._offers_out += 1
        committed = False
        try:
            yield offer
            committed = True
        finally:
            self._offers_out -= 1
            if committed:
                self._adopt(offer)
            if self._offers_out == 0:
                self._open_gate()

    def _adopt(self, offer: hot.LeaseOffer | None) -> None:
        if offer is None or self._stopping:
            self._wake.set()
            return  # taken jobs stay leased until the next start releases them
        gate = self._burst_gate() if offer.taken else None
        for row, context in offer.taken:
            job = Job(*row, context=context)
            # A chain of this key that started after the offer was made ends before this job
            # runs: a key's jobs never run side by side.
            before = self._inflight.get(job.ordering_key)
            self._inflight[job.ordering_key] = asyncio.create_task(
                self._run_chain(job, after=before, gate=gate), name=f"job-{job.id}"
            )
            self._changes += 1
        for key in offer.missed:
            if key in self._inflight:
                # The chain running this key leases the job when it finishes its own, or, if
                # that happened just before this commit, wakes the worker when it ends: no
                # claim transaction per message of a busy conversation.
                self._missed_keys.add(key)
            else:
                self._wake.set()

    def _burst_gate(self) -> asyncio.Event | None:
        """Jobs handed over while other hand-overs are still being stored (a burst of
        webhooks or widget messages) wait for them, at most BURST_WAIT, so the whole burst
        is sent together: Synapse persists events that arrive together in one batch and
        pushes them in fewer /sync responses and appservice transactions (through the hub a
        burst used to reach it spread over the time the stores took, which cost Synapse a
        fifth more CPU per message; bench/relay.py). A job handed over alone starts at once;
        only sends wait, never stores (a webhook's acknowledgement)."""
        if self._gate is not None:
            return self._gate
        if self._offers_out == 0:
            return None
        gate = self._gate = asyncio.Event()
        asyncio.get_running_loop().call_later(BURST_WAIT, self._open_gate, gate)
        return gate

    def _open_gate(self, gate: asyncio.Event | None = None) -> None:
        """Let the held jobs go (`gate`: only if that one is still the current gate)."""
        if self._gate is not None and gate in (None, self._gate):
            self._gate.set()
            self._gate = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_purge = loop.time() + 60
        await self._release_dead_leases()
        while not self._stopping:
            self._wake.clear()
            if loop.time() >= next_purge:
                next_purge = loop.time() + PURGE_INTERVAL_SECONDS
                await self._purge()
                await self._release_dead_leases()
            free = self.config.concurrency - len(self._inflight)
            claimed: list[Job] = []
            if free > 0:
                self._claiming = True
                try:
                    claimed = await self._claim(free)
                except Exception:
                    log.exception("outbox: claiming jobs failed; retrying shortly")
                self._backlog = len(claimed) == free
            else:
                self._backlog = True
            for job in claimed:
                self._inflight[job.ordering_key] = asyncio.create_task(
                    self._run_chain(job), name=f"job-{job.id}"
                )
            self._claiming = False
            if claimed:
                self._changes += 1
            if claimed and len(claimed) == free:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_seconds)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        tasks = list(self._inflight.values())
        if tasks:
            # Let jobs in flight finish briefly; anything cut short is re-leased later.
            _done, pending = await asyncio.wait(tasks, timeout=5)
            for t in pending:
                t.cancel()

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until no job is due or running (for tests and `hub` one-shot commands)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            # A job claimed or finished while the read ran makes its answer stale: read again.
            seen = self._changes
            due = await self._has_due()
            if not due and not self._inflight and not self._claiming and seen == self._changes:
                return
            self.wake()
            await asyncio.sleep(0.05)
        raise TimeoutError("outbox did not drain")

    @property
    def _db(self) -> Database:
        return database_of(self.sessions)

    async def _release_dead_leases(self) -> None:
        """Jobs leased by a hub process of this machine that no longer runs (killed while
        running them) are claimable at once instead of when their lease runs out."""
        prefix = _local_prefix()
        try:
            holders = await self._db.read(hot.lease_holders, prefix)
            dead = []
            for holder in holders:
                pid = holder[len(prefix) :].split(".", 1)[0]
                if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                    dead.append(holder)
            if dead:
                released = await self._db.write(hot.release_leases, dead)
                log.info("outbox: released %d job(s) leased by dead worker(s)", released)
        except Exception:
            log.exception("outbox: releasing the leases of dead workers failed")

    async def _purge(self) -> None:
        """Forget finished jobs after a while; dead ones stay longer for a human to look at."""
        now = utcnow()
        try:
            async with self.sessions.begin() as s:
                await s.execute(
                    delete(OutboxItem).where(
                        OutboxItem.status == "done",
                        OutboxItem.done_at < now - timedelta(days=DONE_RETENTION_DAYS),
                    )
                )
                await s.execute(
                    delete(OutboxItem).where(
                        OutboxItem.status == "dead",
                        OutboxItem.done_at < now - timedelta(days=DEAD_RETENTION_DAYS),
                    )
                )
                await s.execute(
                    delete(InboxTransaction).where(
                        InboxTransaction.received_at < now - timedelta(days=DONE_RETENTION_DAYS)
                    )
                )
        except Exception:
            log.exception("outbox: purging old jobs failed")

    async def _has_due(self) -> bool:
        """A job some worker could claim now (not leased, first of its ordering key)."""
        now = utcnow()
        async with self.sessions() as s:
            row = await s.execute(
                select(OutboxItem.id)
                .where(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= now)
                .where(_lease_free(now), _head_of_key())
                .limit(1)
            )
            return row.first() is not None

    async def _claim(self, limit: int) -> list[Job]:
        rows = await self._db.write(
            hot.claim,
            self.worker_id,
            limit,
            frozenset(self._inflight),
            self.config.lease_seconds,
        )
        return [Job(*r) for r in rows]

    async def _run_chain(
        self,
        job: Job | None,
        after: asyncio.Task[None] | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        """Run a job, then the next one of its ordering key if finishing it leased that too;
        first wait for `after`, an earlier chain of the same key, and for `gate`."""
        key = job.ordering_key if job else ""
        try:
            if gate is not None:
                await gate.wait()
            if after is not None:
                await asyncio.wait([after])
            while job is not None:
                job = await self._run_job(job)
                self._changes += 1
        finally:
            if self._inflight.get(key) is asyncio.current_task():
                del self._inflight[key]
            if key in self._missed_keys:
                self._missed_keys.discard(key)
                self._wake.set()
            if self._backlog:
                self._wake.set()

    async def _run_job(self, job: Job) -> Job | None:
        """Run one job; the next job of its key when completing it leased one."""
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                await self._fail(job, f"no handler for job kind {job.kind!r}", permanent=True)
                return None
            try:
                finish = await handler(job)
            except PermanentFailure as exc:
                await self._fail(job, str(exc), permanent=True, code=exc.code)
            except RetryLater as exc:
                await self._fail(job, str(exc), delay=exc.delay)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                classified = _classify(exc)
                if classified is None:
                    log.exception("outbox: job %s (%s) failed unexpectedly", job.id, job.kind)
                    await self._fail(job, f"internal error: {exc!r}")
                else:
                    permanent, delay = classified
                    await self._fail(job, str(exc), permanent=permanent, delay=delay)
            else:
                try:
                    return await self._complete(job, finish)
                except Exception as exc:
                    # Rolled back: counted like a handler failure, so it backs off and is
                    # dead-lettered after max_attempts instead of looping on lease expiry.
                    log.exception("outbox: finishing job %s (%s) failed", job.id, job.kind)
                    await self._fail(job, f"internal error while finishing: {exc!r}")
        except asyncio.CancelledError:
            raise
        except Exception:
            # The job stays leased and is retried when the lease expires.
            log.exception("outbox: bookkeeping for job %s failed", job.id)
        return None

    async def _complete(self, job: Job, finish: Finish | SqlFinish | None) -> Job | None:
        chain = None if self._stopping else (self.worker_id, self.config.lease_seconds)
        args = (job.id, job.attempts + 1, job.ordering_key, chain)
        after: AfterCommit | None = None
        preloads = self.preloads
        if finish is None or isinstance(finish, SqlFinish):
            run = finish.run if finish is not None else None
            nxt = await self._db.write(_complete_sql, run, args, preloads)
            after = finish.after if finish is not None else None
        else:
            async with self.sessions.begin() as s:
                after = await finish(s)
                await s.flush()
                nxt = await s.run_sync(
                    lambda sync: _complete_sql(sync.connection(), None, args, preloads)
                )
        if after is not None:
            try:
                await after()
            except Exception:
                log.exception("outbox: after-commit step of job %s failed", job.id)
        if nxt is None:
            return None
        row, context = nxt
        return Job(*row, context=context)

    async def _fail(
        self,
        job: Job,
        reason: str,
        *,
        permanent: bool = False,
        delay: float | None = None,
        code: str | None = None,
    ) -> None:
        attempts = job.attempts + 1
        dead = permanent or attempts >= self.config.max_attempts
        if delay is None:
            delay = backoff_delay(
                attempts, self.config.base_delay_seconds, self.config.max_delay_seconds
            )
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_error": reason[:2000],
            "leased_until": None,
        }
        if dead:
            values |= {"status": "dead", "done_at": utcnow()}
            # A permanent refusal (window closed, blocked) is expected and explained in the
            # room; running out of attempts means something is wrong.
            log.log(
                logging.WARNING if permanent else logging.ERROR,
                "outbox: job %s (%s) dead-lettered after %d attempt(s): %s",
                job.id,
                job.kind,
                attempts,
                reason,
            )
        else:
            values["next_attempt_at"] = utcnow() + timedelta(seconds=delay)
            log.warning(
                "outbox: job %s (%s) attempt %d failed, retry in %.1fs: %s",
                job.id,
                job.kind,
                attempts,
                delay,
                reason,
            )
        await self._db.write(hot.update_job, job.id, values)
        # Failures are rare: claim again at once (a dead job frees its key; a retry may be
        # due already).
        self._backlog = True
        if dead and job.kind in self.dead_handlers:
            try:
                await self.dead_handlers[job.kind](job, reason, code)
            except Exception:
                log.exception("outbox: dead-letter handler for job %s failed", job.id)


def _complete_sql(
    conn: Connection,
    run: Callable[[Connection], None] | None,
    args: tuple[int, int, str, tuple[str, float] | None],
    preloads: dict[str, Preload],
) -> tuple[hot.JobRow, Any] | None:
    """Finish a job; the next job of its key, when leased, with what its handler reads."""
    if run is not None:
        run(conn)
    nxt = hot.complete(conn, *args)
    if nxt is None:
        return None
    preload = preloads.get(nxt[1])
    return nxt, (preload(conn, nxt[3]) if preload is not None else None)


def _head_of_key() -> ColumnElement[bool]:
    """No older pending job shares this job's ordering key."""
    earlier = aliased(OutboxItem)
    return ~exists().where(
        and_(
            earlier.ordering_key == OutboxItem.ordering_key,
            earlier.status == "pending",
            earlier.id < OutboxItem.id,
        )
    )


def _lease_free(now: datetime) -> ColumnElement[bool]:
    return or_(OutboxItem.leased_until.is_(None), OutboxItem.leased_until < now)


def _classify(exc: Exception) -> tuple[bool, float | None] | None:
    """(permanent, delay) for errors of other systems, None for unexpected ones."""
    if isinstance(exc, ExternalError):
        return exc.permanent, exc.retry_after
    return None
