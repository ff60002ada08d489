"""The job worker: claims due jobs, runs each kind's handler, completes or fails them.

Jobs of one ordering key run one after another (a chain: finishing a job may lease the next
of its key in the same transaction); up to `config.concurrency` keys run side by side.
The worker is woken after every commit that queued jobs (it is the database's JobSink),
and otherwise polls every `poll_seconds` for retries that came due.
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
from datetime import timedelta
from pathlib import Path
from typing import Any

from hub.config import OutboxConfig
from hub.db import jobs
from hub.db.database import Database, Tx
from hub.db.jobs import JobRow, LeaseOffer
from hub.db.models import utcnow
from hub.errors import ExternalError
from hub.i18n import _
from hub.jobs.handover import Handover
from hub.jobs.job import (
    DeadHandler,
    Finish,
    Handler,
    Job,
    PermanentFailure,
    Preload,
    RetryLater,
    handlers_of,
)
from hub.logs import job_context
from hub.metrics import count_job_failure

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 3600
RELEASE_INTERVAL_SECONDS = 15
DONE_RETENTION_DAYS = 7
DEAD_RETENTION_DAYS = 30


def _local_prefix() -> str:
    """Host and PID namespace: workers whose id starts with this run on this machine, where
    whether their process still lives can be checked."""
    # The boot id too: cloned machines share a host name, and the initial PID namespace's
    # inode is the same on every Linux machine; a sibling must never take another machine's
    # live process for a dead one of its own.
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    host = hashlib.sha256(f"{socket.gethostname()}/{boot}".encode()).hexdigest()[:12]
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
    return float(min(cap, delay * (1 + random.uniform(-jitter, jitter))))


class Worker:
    def __init__(self, db: Database, config: OutboxConfig, worker_id: str | None = None) -> None:
        self.db = db
        self.config = config
        self.worker_id = worker_id or default_worker_id()
        self.handlers: dict[str, Handler] = {}
        self.dead_handlers: dict[str, DeadHandler] = {}
        self.preloads: dict[str, Preload] = {}
        self.inflight: dict[str, asyncio.Task[None]] = {}  # chains by ordering key
        self.running: set[int] = set()  # ids of the jobs whose handlers run now
        self.stopping = False
        self.handover = Handover(self)
        self._wake = asyncio.Event()
        # The last claim filled every free slot: more jobs may be due once one finishes.
        self._backlog = True
        self._claiming = False  # between a claim's commit and its tasks' start
        self._changes = 0  # counts claims and finished jobs (for drain)

    # -- registration -----------------------------------------------------------------

    def register(
        self,
        kind: str,
        handler: Handler,
        on_dead: DeadHandler | None = None,
        preload: Preload | None = None,
    ) -> None:
        if kind in self.handlers:
            raise ValueError(f"job handler for {kind!r} registered twice")
        self.handlers[kind] = handler
        if on_dead is not None:
            self.dead_handlers[kind] = on_dead
        if preload is not None:
            self.preloads[kind] = preload

    def register_handlers(self, *objects: object) -> None:
        """Register what each object declares with @handles (hub.jobs.job)."""
        for obj in objects:
            for spec, handler, dead in handlers_of(obj):
                self.register(spec.kind, handler, dead, spec.preload)

    # -- the database's JobSink -------------------------------------------------------

    def offer(self, urgent: bool) -> LeaseOffer | None:
        if self.stopping or not self.db.serialised:
            return None
        return self.handover.offer(urgent)

    def settled(self, offer: LeaseOffer | None, queued: bool, committed: bool) -> None:
        if offer is not None:
            self.handover.settled(offer, committed)
        elif committed and queued:
            self.wake()

    def wake(self) -> None:
        self._wake.set()

    def start(self, row: JobRow, context: Any, gate: asyncio.Event | None = None) -> None:
        """Run a job leased to this worker once its key's running chain (if any) ended."""
        job = Job(*row, context=context)
        before = self.inflight.get(job.ordering_key)
        self.inflight[job.ordering_key] = asyncio.create_task(
            self._run_chain(job, after=before, gate=gate), name=f"job-{job.id}"
        )
        self._changes += 1

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_purge = loop.time() + 60
        next_release = loop.time() + RELEASE_INTERVAL_SECONDS
        next_extend = loop.time() + self.config.lease_seconds / 3
        await self._release_dead_leases()
        while not self.stopping:
            self._wake.clear()
            if loop.time() >= next_purge:
                next_purge = loop.time() + PURGE_INTERVAL_SECONDS
                await self._purge()
            if loop.time() >= next_extend:
                next_extend = loop.time() + self.config.lease_seconds / 3
                await self._extend_leases()
            if loop.time() >= next_release:
                # Another hub process of this machine that died (several processes on one
                # PostgreSQL): its jobs are taken over now rather than when leases run out.
                next_release = loop.time() + RELEASE_INTERVAL_SECONDS
                await self._release_dead_leases()
            free = self.config.concurrency - len(self.inflight)
            claimed: list[JobRow] = []
            if free > 0:
                self._claiming = True
                try:
                    claimed = await self.db.write(
                        jobs.claim,
                        self.worker_id,
                        free,
                        frozenset(self.inflight),
                        self.config.lease_seconds,
                    )
                except Exception:
                    log.exception("jobs: claiming failed; retrying shortly")
                self._backlog = len(claimed) == free
            else:
                self._backlog = True
            for row in claimed:
                self.start(row, None)
            self._claiming = False
            if claimed and len(claimed) == free:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_seconds)

    async def stop(self) -> None:
        self.stopping = True
        self._wake.set()
        tasks = list(self.inflight.values())
        if tasks:
            # Let jobs in flight finish briefly; anything cut short is re-leased later.
            _done, pending = await asyncio.wait(tasks, timeout=5)
            for t in pending:
                t.cancel()

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until no job is due or running (for tests and one-shot commands)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            # A job claimed or finished while the read ran makes its answer stale: read again.
            seen = self._changes
            due = await self.db.read(jobs.has_due)
            if not due and not self.inflight and not self._claiming and seen == self._changes:
                return
            self.wake()
            await asyncio.sleep(0.05)
        raise TimeoutError("the job queue did not drain")

    # -- one chain, one job -----------------------------------------------------------

    async def _run_chain(
        self, job: Job | None, after: asyncio.Task[None] | None, gate: asyncio.Event | None
    ) -> None:
        """Run a job, then the next one of its key if finishing it leased that too; first
        wait for `after`, an earlier chain of the same key, and for `gate` (handover)."""
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
            if self.inflight.get(key) is asyncio.current_task():
                del self.inflight[key]
            if self.handover.chain_ended(key) or self._backlog:
                self._wake.set()

    async def _run_job(self, job: Job) -> Job | None:
        """Run one job; the next job of its key when completing it leased one. Its log lines
        name the job, its conversation or room and its event (hub.logs)."""
        self.running.add(job.id)
        try:
            with job_context(job.id, job.kind, job.ordering_key, job.payload):
                return await self._run_one(job)
        finally:
            self.running.discard(job.id)

    async def _run_one(self, job: Job) -> Job | None:
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                count_job_failure(job.kind, "no_handler")
                await self._fail(job, f"no handler for job kind {job.kind!r}", permanent=True)
                return None
            try:
                finish = await handler(job)
            except PermanentFailure as exc:
                count_job_failure(job.kind, exc)
                await self._fail(job, str(exc), permanent=True, code=exc.code)
            except RetryLater as exc:
                count_job_failure(job.kind, exc)
                await self._fail(job, str(exc), delay=exc.delay)
            except ExternalError as exc:
                count_job_failure(job.kind, exc)
                await self._fail(
                    job, exc.human, permanent=exc.permanent, delay=exc.retry_after, code=exc.code
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("jobs: job %s (%s) failed unexpectedly", job.id, job.kind)
                count_job_failure(job.kind, exc)
                await self._fail(job, _("internal error: {error}").format(error=repr(exc)))
            else:
                try:
                    return await self._complete(job, finish)
                except Exception as exc:
                    # Rolled back: counted like a handler failure, so it backs off and is
                    # dead-lettered after max_attempts instead of looping on lease expiry.
                    log.exception("jobs: finishing job %s (%s) failed", job.id, job.kind)
                    count_job_failure(job.kind, "internal")
                    await self._fail(
                        job, _("internal error while finishing: {error}").format(error=repr(exc))
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            # The job stays leased and is retried when the lease expires.
            log.exception("jobs: bookkeeping for job %s failed", job.id)
        return None

    async def _complete(self, job: Job, finish: Finish | None) -> Job | None:
        chain = None if self.stopping else (self.worker_id, self.config.lease_seconds)
        nxt = await self.db.write(_complete, finish, job, chain, self.preloads)
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
        if dead:
            # A permanent refusal (window closed, blocked) is expected and explained in the
            # room; running out of attempts means something is wrong.
            log.log(
                logging.WARNING if permanent else logging.ERROR,
                "jobs: job %s (%s) dead-lettered after %d attempt(s): %s",
                job.id,
                job.kind,
                attempts,
                reason,
            )
        else:
            log.warning(
                "jobs: job %s (%s) attempt %d failed, retry in %.1fs: %s",
                job.id,
                job.kind,
                attempts,
                delay,
                reason,
            )
        retry_at = utcnow() + timedelta(seconds=delay)
        await self.db.write(jobs.fail, job.id, attempts, reason, dead, retry_at)
        # Failures are rare: claim again at once (a dead job frees its key; a retry may be
        # due already).
        self._backlog = True
        if dead and job.kind in self.dead_handlers:
            try:
                await self.dead_handlers[job.kind](job, reason, code)
            except Exception:
                log.exception("jobs: dead-letter handler for job %s failed", job.id)

    # -- housekeeping -----------------------------------------------------------------

    async def _extend_leases(self) -> None:
        """Jobs running longer than a third of the lease keep it (a slow upload, a
        provider answering late): another process must not take them while they run."""
        if not self.running:
            return
        try:
            await self.db.write(
                jobs.extend_leases, self.worker_id, sorted(self.running), self.config.lease_seconds
            )
        except Exception:
            log.exception("jobs: extending the leases of running jobs failed")

    async def _release_dead_leases(self) -> None:
        """Jobs leased by a hub process of this machine that no longer runs (killed while
        running them) are claimable at once instead of when their lease runs out."""
        prefix = _local_prefix()
        try:
            holders = await self.db.read(jobs.lease_holders, prefix)
            dead = []
            for holder in holders:
                pid = holder[len(prefix) :].split(".", 1)[0]
                if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                    dead.append(holder)
            if dead:
                released = await self.db.write(jobs.release_leases, dead)
                log.info("jobs: released %d job(s) leased by dead worker(s)", released)
        except Exception:
            log.exception("jobs: releasing the leases of dead workers failed")

    async def _purge(self) -> None:
        try:
            await self.db.write(jobs.purge, DONE_RETENTION_DAYS, DEAD_RETENTION_DAYS)
        except Exception:
            log.exception("jobs: purging old jobs failed")


def _complete(
    tx: Tx,
    finish: Finish | None,
    job: Job,
    chain: tuple[str, float] | None,
    preloads: dict[str, Preload],
) -> tuple[JobRow, Any] | None:
    """The handler's writes and the job marked done, in one transaction; the next job of
    its key, when leased, with what its handler reads."""
    if finish is not None:
        finish(tx)
        if tx.orm_active:
            tx.orm.flush()
    nxt = jobs.complete(tx, job.id, job.attempts + 1, job.ordering_key, chain)
    if nxt is None:
        return None
    preload = preloads.get(nxt[1])
    return nxt, (preload(tx.conn, nxt[3]) if preload is not None else None)
