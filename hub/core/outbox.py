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
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from hub.config import OutboxConfig
from hub.db.models import InboxTransaction, OutboxItem, utcnow
from hub.db.upsert import insert_ignore

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 3600
DONE_RETENTION_DAYS = 7
DEAD_RETENTION_DAYS = 30

Finish = Callable[[AsyncSession], Awaitable[None]]


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    ordering_key: str
    payload: dict[str, Any]
    attempts: int  # attempts made before this one


Handler = Callable[[Job], Awaitable[Finish | None]]
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
        {
            "kind": kind,
            "ordering_key": ordering_key,
            "payload": payload,
            "idempotency_key": idempotency_key,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": utcnow() + timedelta(seconds=delay),
            "created_at": utcnow(),
        },
        ["idempotency_key"],
    )


@dataclass
class OutboxWorker:
    sessions: async_sessionmaker[AsyncSession]
    config: OutboxConfig
    handlers: dict[str, Handler] = field(default_factory=dict)
    dead_handlers: dict[str, DeadHandler] = field(default_factory=dict)
    worker_id: str = field(default_factory=lambda: secrets.token_hex(6))
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _inflight: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    _inflight_keys: set[str] = field(default_factory=set)
    _stopping: bool = False

    def register(self, kind: str, handler: Handler, on_dead: DeadHandler | None = None) -> None:
        if kind in self.handlers:
            raise ValueError(f"outbox handler for {kind!r} registered twice")
        self.handlers[kind] = handler
        if on_dead is not None:
            self.dead_handlers[kind] = on_dead

    def wake(self) -> None:
        """Call after committing new jobs so they start without waiting for the poll."""
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_purge = loop.time() + 60
        while not self._stopping:
            self._wake.clear()
            if loop.time() >= next_purge:
                next_purge = loop.time() + PURGE_INTERVAL_SECONDS
                await self._purge()
            free = self.config.concurrency - len(self._inflight)
            claimed: list[Job] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception:
                    log.exception("outbox: claiming jobs failed; retrying shortly")
            for job in claimed:
                self._inflight_keys.add(job.ordering_key)
                task = asyncio.create_task(self._run_job(job), name=f"job-{job.id}")
                self._inflight[job.id] = task
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
            if not self._inflight and not await self._has_due():
                return
            self.wake()
            await asyncio.sleep(0.05)
        raise TimeoutError("outbox did not drain")

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
        now = utcnow()
        head_of_key = _head_of_key()
        lease_free = _lease_free(now)
        query = (
            select(OutboxItem)
            .where(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= now)
            .where(lease_free, head_of_key)
            .order_by(OutboxItem.id)
            .limit(limit + len(self._inflight_keys))
        )
        jobs: list[Job] = []
        async with self.sessions.begin() as s:
            rows = (await s.execute(query)).scalars().all()
            for item in rows:
                if len(jobs) >= limit or item.ordering_key in self._inflight_keys:
                    continue
                res = await s.execute(
                    update(OutboxItem)
                    .where(OutboxItem.id == item.id, OutboxItem.status == "pending", lease_free)
                    .values(
                        leased_until=now + timedelta(seconds=self.config.lease_seconds),
                        leased_by=self.worker_id,
                    )
                )
                if res.rowcount:  # type: ignore[attr-defined]
                    jobs.append(
                        Job(item.id, item.kind, item.ordering_key, item.payload, item.attempts)
                    )
        return jobs

    async def _run_job(self, job: Job) -> None:
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                await self._fail(job, f"no handler for job kind {job.kind!r}", permanent=True)
                return
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
                    await self._complete(job, finish)
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
        finally:
            self._inflight.pop(job.id, None)
            self._inflight_keys.discard(job.ordering_key)
            self._wake.set()

    async def _complete(self, job: Job, finish: Finish | None) -> None:
        async with self.sessions.begin() as s:
            if finish is not None:
                await finish(s)
            await s.execute(
                update(OutboxItem)
                .where(OutboxItem.id == job.id)
                .values(
                    status="done",
                    attempts=job.attempts + 1,
                    done_at=utcnow(),
                    leased_until=None,
                    last_error=None,
                )
            )

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
        async with self.sessions.begin() as s:
            await s.execute(update(OutboxItem).where(OutboxItem.id == job.id).values(**values))
        if dead and job.kind in self.dead_handlers:
            try:
                await self.dead_handlers[job.kind](job, reason, code)
            except Exception:
                log.exception("outbox: dead-letter handler for job %s failed", job.id)


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
    """(permanent, delay) for errors of known clients, None for unexpected ones."""
    from hub.bridges.base import ChannelError
    from hub.matrix.client import MatrixError, MatrixUnavailable

    if isinstance(exc, ChannelError):
        return exc.permanent, exc.retry_after

    if isinstance(exc, MatrixError):
        delay = exc.retry_after_ms / 1000 if exc.retry_after_ms else None
        return exc.permanent, delay
    if isinstance(exc, MatrixUnavailable):
        return False, None
    return None
