"""The job queue as a unit: enqueue, claim, run, retry, dead-letter, ordering, leases,
drain, and jobs handed from the storing transaction straight to the worker.

Runs on a throwaway SQLite file (the real engine with migrations): the queue *is* SQL.
Time never passes in these tests: a job "later" is moved to "now" by editing its row, so
nothing depends on sleeping or on how fast the machine is.

Jobs are queued the way the hub queues them: by a unit of work run with `db.write`. With
`running(worker, sink=True)` the worker is the database's sink as in the app (hub/app.py):
every commit that queued jobs reaches it, and on an SQLite file a write leases the jobs it
queues to the worker directly (hub.jobs.handover). Without it, jobs are only claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from hub.config import OutboxConfig
from hub.db import jobs
from hub.db.database import Database, JobSink, Tx
from hub.db.engine import migrate, open_database
from hub.db.jobs import LeaseOffer, enqueue
from hub.db.models import Customer, OutboxItem, utcnow
from hub.errors import WINDOW_CLOSED, ExternalError
from hub.jobs import handover
from hub.jobs.job import Finish, Job, PermanentFailure, RetryLater
from hub.jobs.worker import Worker, _local_prefix, backoff_delay
from hub.matrix.client import MatrixError, MatrixUnavailable

HOUR = 3600.0
JobSpec = tuple[str, str, str]  # ordering key, name, idempotency key


def make_config(**overrides: Any) -> OutboxConfig:
    # Backoff of an hour: a failed job is retried only when a test moves it to "now".
    values: dict[str, Any] = {
        "concurrency": 4,
        "max_attempts": 5,
        "base_delay_seconds": HOUR,
        "max_delay_seconds": 10 * HOUR,
        "lease_seconds": 600,
        "poll_seconds": 0.05,
    }
    return OutboxConfig(**(values | overrides))


def make_worker(db: Database, **overrides: Any) -> Worker:
    worker_id = overrides.pop("worker_id", "worker-a")
    return Worker(db, make_config(**overrides), worker_id=worker_id)


def recording_worker(db: Database, **overrides: Any) -> tuple[Worker, list[str]]:
    """A worker whose "test" handler only records the names of the jobs it ran, in order."""
    worker = make_worker(db, **overrides)
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.payload["name"])

    worker.register("test", handler)
    return worker, ran


def context_worker(db: Database, **overrides: Any) -> tuple[Worker, list[tuple[str, Any]]]:
    """A worker recording (name, context) of the jobs it ran: a job handed over by the
    transaction that queued it carries its name as context; a claimed job carries None."""
    worker = make_worker(db, **overrides)
    seen: list[tuple[str, Any]] = []

    async def handler(job: Job) -> None:
        seen.append((job.payload["name"], job.context))

    worker.register("test", handler)
    return worker, seen


@contextlib.asynccontextmanager
async def running(worker: Worker, sink: bool | JobSink = False) -> AsyncIterator[Worker]:
    """Run the worker; `sink`: attach it (or a sink standing for it) to the database first,
    as the app does, and detach it before it stops."""
    db = worker.db
    if sink:
        db.sink = worker if sink is True else sink
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        db.sink = None
        await worker.stop()
        await asyncio.wait_for(task, 10)


class RecordingSink:
    """The worker as the database sees it, recording every write it is told of."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.writes: list[tuple[LeaseOffer | None, bool, bool]] = []

    def offer(self, urgent: bool) -> LeaseOffer | None:
        return self.worker.offer(urgent)

    def settled(self, offer: LeaseOffer | None, queued: bool, committed: bool) -> None:
        self.writes.append((offer, queued, committed))
        self.worker.settled(offer, queued, committed)


def count_claims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets an item per claim transaction of any worker from now on."""
    calls: list[int] = []
    claim = jobs.claim

    def counting(tx: Tx, *args: Any, **kwargs: Any) -> list[jobs.JobRow]:
        calls.append(1)
        return claim(tx, *args, **kwargs)

    monkeypatch.setattr(jobs, "claim", counting)
    return calls


# -- units of work the tests run ------------------------------------------------------------


def queue(
    tx: Tx,
    specs: tuple[JobSpec, ...],
    kind: str = "test",
    delay: float = 0,
    offers: list[LeaseOffer | None] | None = None,
) -> list[int | None]:
    """Enqueue jobs; a job handed over to the worker carries its name as context."""
    if offers is not None:
        offers.append(tx.offer)
    return [
        enqueue(tx, kind, key, {"name": name}, idem, delay=delay, context=name)
        for key, name, idem in specs
    ]


async def add(
    db: Database,
    *specs: JobSpec,
    kind: str = "test",
    delay: float = 0,
    urgent: bool = False,
    offers: list[LeaseOffer | None] | None = None,
) -> list[int]:
    """Enqueue (ordering_key, name, idempotency_key) jobs in one write; their ids.
    `offers` gets the write's LeaseOffer (None when there was none)."""
    ids = await db.write(queue, specs, kind, delay, offers, urgent=urgent)
    assert None not in ids
    return [i for i in ids if i is not None]


def _rows(tx: Tx) -> list[OutboxItem]:
    return list(tx.orm.scalars(select(OutboxItem).order_by(OutboxItem.id)))


def _set(tx: Tx, job_id: int | None, values: dict[str, Any]) -> None:
    stmt = update(OutboxItem).values(**values)
    if job_id is not None:
        stmt = stmt.where(OutboxItem.id == job_id)
    tx.conn.execute(stmt)


async def rows(db: Database) -> list[OutboxItem]:
    return await db.read(_rows)


def _get(tx: Tx, job_id: int) -> OutboxItem | None:
    return tx.orm.get(OutboxItem, job_id)


async def row(db: Database, job_id: int) -> OutboxItem:
    item = await db.read(_get, job_id)
    assert item is not None
    return item


async def row_by_name(db: Database, name: str) -> OutboxItem:
    (item,) = [i for i in await rows(db) if i.payload.get("name") == name]
    return item


async def set_row(db: Database, job_id: int | None, **values: Any) -> None:
    """Edit a job's row (every job's when `job_id` is None)."""
    await db.write(_set, job_id, values)


async def make_due(db: Database, job_id: int, *, release_lease: bool = False) -> None:
    """Let time pass for one job: its retry (and optionally its lease) is due now."""
    values: dict[str, Any] = {"next_attempt_at": utcnow() - timedelta(seconds=1)}
    if release_lease:
        values["leased_until"] = utcnow() - timedelta(seconds=1)
    await set_row(db, job_id, **values)


async def eventually(check: Callable[[], Awaitable[Any] | Any], timeout: float = 10.0) -> None:
    """Poll until check() holds; fail with a clear message otherwise."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        ok = check()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        if loop.time() > end:
            raise AssertionError(f"condition not reached within {timeout}s")
        await asyncio.sleep(0.01)


def status_is(db: Database, job_id: int, status: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await row(db, job_id)).status == status

    return check


async def _done(db: Database, name: str) -> bool:
    return (await row_by_name(db, name)).status == "done"


def assert_close(actual: datetime, low: datetime, high: datetime) -> None:
    assert low <= actual <= high, f"{actual} not within [{low}, {high}]"


# --- enqueue ----------------------------------------------------------------------------------


async def test_enqueue_is_idempotent(db: Database) -> None:
    def twice(tx: Tx) -> list[int | None]:
        return [
            enqueue(tx, "k", "conv:1", {"n": 1}, "idem-1"),
            enqueue(tx, "k", "conv:1", {"n": 2}, "idem-1"),
        ]

    def later(tx: Tx) -> list[int | None]:
        return [
            enqueue(tx, "k", "conv:9", {"n": 3}, "idem-1"),
            enqueue(tx, "k", "conv:1", {"n": 4}, "idem-2"),
        ]

    first, duplicate = await db.write(twice)
    assert isinstance(first, int) and duplicate is None
    again, second = await db.write(later)
    assert again is None and isinstance(second, int)
    items = await rows(db)
    assert [(i.id, i.idempotency_key, i.payload, i.kind) for i in items] == [
        (first, "k/idem-1", {"n": 1}, "k"),
        (second, "k/idem-2", {"n": 4}, "k"),
    ]
    assert all(i.status == "pending" and i.attempts == 0 for i in items)


async def test_idempotency_keys_are_namespaced_per_kind(db: Database) -> None:
    """The same key under two kinds adds two jobs; a duplicate tells the sink nothing."""

    class Sink:
        def __init__(self) -> None:
            self.queued: list[bool] = []

        def offer(self, urgent: bool) -> LeaseOffer | None:
            return None

        def settled(self, offer: LeaseOffer | None, queued: bool, committed: bool) -> None:
            self.queued.append(queued and committed)

    sink = Sink()
    db.sink = sink

    def both(tx: Tx) -> list[int | None]:
        return [
            enqueue(tx, "matrix.event", "room:!a", {"n": 1}, "$event1"),
            enqueue(tx, "channel.send", "conv:1", {"n": 2}, "$event1"),
        ]

    event_job, send_job = await db.write(both)
    assert isinstance(event_job, int) and isinstance(send_job, int) and event_job != send_job
    assert sink.queued == [True]
    assert await db.write(both) == [None, None]
    assert sink.queued == [True]  # nothing new was queued: no worker is woken for it
    items = await rows(db)
    assert [(i.kind, i.idempotency_key) for i in items] == [
        ("matrix.event", "matrix.event/$event1"),
        ("channel.send", "channel.send/$event1"),
    ]


async def test_enqueue_belongs_to_the_callers_transaction(db: Database) -> None:
    def queue_then_fail(tx: Tx) -> None:
        enqueue(tx, "k", "conv:1", {}, "rolled-back")
        raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        await db.write(queue_then_fail)
    assert await rows(db) == []


async def test_enqueue_delay_sets_next_attempt(db: Database) -> None:
    def both(tx: Tx) -> None:
        enqueue(tx, "k", "conv:1", {}, "now")
        enqueue(tx, "k", "conv:2", {}, "later", delay=90)

    before = utcnow()
    await db.write(both)
    after = utcnow()
    items = {i.idempotency_key: i for i in await rows(db)}
    assert_close(items["k/now"].next_attempt_at, before, after)
    later = timedelta(seconds=90)
    assert_close(items["k/later"].next_attempt_at, before + later, after + later)


# --- running jobs -----------------------------------------------------------------------------


async def test_handlers_run_and_jobs_become_done(db: Database) -> None:
    seen: list[Job] = []

    async def handler(job: Job) -> None:
        seen.append(job)

    worker = make_worker(db)
    worker.register("test", handler)
    worker.register("other", handler)
    ids = await add(db, ("conv:1", "a", "i-a"), ("conv:2", "b", "i-b"))
    ids += await add(db, ("conv:1", "c", "i-c"), kind="other")
    async with running(worker):
        await worker.drain()
    assert sorted(j.id for j in seen) == ids
    by_name = {j.payload["name"]: j for j in seen}
    assert by_name["a"].kind == "test" and by_name["c"].kind == "other"
    assert by_name["b"].ordering_key == "conv:2"
    assert all(j.attempts == 0 for j in seen)
    for job_id in ids:
        item = await row(db, job_id)
        assert item.status == "done"
        assert item.attempts == 1
        assert item.done_at is not None
        assert item.leased_until is None
        assert item.leased_by == "worker-a"
        assert item.last_error is None


async def test_wake_starts_new_jobs_without_waiting_for_the_poll(db: Database) -> None:
    ran = asyncio.Event()

    async def handler(job: Job) -> None:
        ran.set()

    worker = make_worker(db, poll_seconds=60)
    worker.register("test", handler)
    async with running(worker):
        await asyncio.sleep(0)  # let the worker find the queue empty and start waiting
        (job_id,) = await add(db, ("conv:1", "a", "i-a"))  # no sink: nobody is told
        worker.wake()
        await asyncio.wait_for(ran.wait(), 10)
        await eventually(status_is(db, job_id, "done"))


async def test_register_twice_is_refused(db: Database) -> None:
    worker = make_worker(db)

    async def handler(job: Job) -> None:
        return None

    worker.register("test", handler)
    with pytest.raises(ValueError, match="twice"):
        worker.register("test", handler)


async def test_job_of_unknown_kind_is_dead_lettered(db: Database) -> None:
    worker = make_worker(db)
    (job_id,) = await add(db, ("conv:1", "a", "i-a"), kind="nobody.handles.this")
    async with running(worker):
        await worker.drain()
    item = await row(db, job_id)
    assert item.status == "dead"
    assert "no handler" in (item.last_error or "")


# --- ordering ---------------------------------------------------------------------------------


async def test_one_key_runs_in_order_while_other_keys_proceed(db: Database) -> None:
    """The head of conv:A is in flight: conv:B runs meanwhile, A's later jobs wait."""
    started: list[str] = []
    release_a1 = asyncio.Event()

    async def handler(job: Job) -> None:
        started.append(job.payload["name"])
        if job.payload["name"] == "a1":
            await release_a1.wait()

    worker = make_worker(db, concurrency=4)
    worker.register("test", handler)
    await add(
        db,
        ("conv:A", "a1", "a1"),
        ("conv:A", "a2", "a2"),
        ("conv:A", "a3", "a3"),
        ("conv:B", "b1", "b1"),
        ("conv:B", "b2", "b2"),
    )
    async with running(worker):
        # b2 can only be claimed after b1 finished, i.e. in a later claim round than a1's
        # (or leased by b1's completion); a2 (an older due job) had to be left alone.
        await eventually(lambda: _done(db, "b2"))
        assert "a2" not in started and "a3" not in started
        assert started[:1] == ["a1"]
        release_a1.set()
        await worker.drain()
    assert [n for n in started if n.startswith("a")] == ["a1", "a2", "a3"]
    assert [n for n in started if n.startswith("b")] == ["b1", "b2"]


async def test_failing_head_blocks_its_key_until_it_succeeds(db: Database) -> None:
    started: list[str] = []
    failures = {"a1": 1}

    async def handler(job: Job) -> None:
        name = job.payload["name"]
        started.append(name)
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            raise RetryLater("try again in an hour", delay=HOUR)

    worker = make_worker(db, concurrency=4)
    worker.register("test", handler)
    a1, _a2, _a3, _b1, _b2 = await add(
        db,
        ("conv:A", "a1", "a1"),
        ("conv:A", "a2", "a2"),
        ("conv:A", "a3", "a3"),
        ("conv:B", "b1", "b1"),
        ("conv:B", "b2", "b2"),
    )
    async with running(worker):
        await eventually(lambda: _done(db, "b2"))
        await eventually(lambda: _attempted(db, a1))
        # A job added now, on a third key, is picked up by a claim round that also saw the
        # due a2 and a3: they must still be waiting for a1.
        await add(db, ("conv:C", "c1", "c1"))
        worker.wake()
        await eventually(lambda: _done(db, "c1"))
        assert started.count("a1") == 1
        assert "a2" not in started and "a3" not in started
        assert (await row_by_name(db, "a2")).status == "pending"

        await make_due(db, a1)  # an hour later
        worker.wake()
        await eventually(lambda: _done(db, "a3"))
    assert [n for n in started if n.startswith("a")] == ["a1", "a1", "a2", "a3"]


async def _attempted(db: Database, job_id: int) -> bool:
    item = await row(db, job_id)
    return item.attempts > 0 and item.leased_until is None


async def test_dead_head_unblocks_its_key(db: Database) -> None:
    started: list[str] = []

    async def handler(job: Job) -> None:
        started.append(job.payload["name"])
        if job.payload["name"] == "a1":
            raise PermanentFailure("the customer blocked us")

    worker = make_worker(db)
    worker.register("test", handler)
    await add(db, ("conv:A", "a1", "a1"), ("conv:A", "a2", "a2"))
    async with running(worker):
        await worker.drain()
    assert started == ["a1", "a2"]
    assert (await row_by_name(db, "a1")).status == "dead"
    assert (await row_by_name(db, "a2")).status == "done"


# --- retries and dead letters -----------------------------------------------------------------


async def test_retry_later_delay_is_honoured(db: Database) -> None:
    calls: list[Job] = []

    async def handler(job: Job) -> None:
        calls.append(job)
        if len(calls) == 1:
            raise RetryLater("429 slow down", delay=123)

    worker = make_worker(db)
    worker.register("test", handler)
    (job_id,) = await add(db, ("conv:1", "a", "i-a"))
    async with running(worker):
        before = utcnow()
        await worker.drain()  # the retry is not due: drain returns without running it
        after = utcnow()
        item = await row(db, job_id)
        assert len(calls) == 1
        assert item.status == "pending"
        assert item.attempts == 1
        assert item.last_error == "429 slow down"
        assert item.leased_until is None
        delay = timedelta(seconds=123)
        # The attempt failed between `before` and `after` (the worker task starts only
        # once drain awaits): the retry is due the requested delay after that.
        assert_close(item.next_attempt_at, before + delay, after + delay)

        await make_due(db, job_id)
        await worker.drain()
    assert [j.attempts for j in calls] == [0, 1]
    item = await row(db, job_id)
    assert (item.status, item.attempts, item.last_error) == ("done", 2, None)


def test_backoff_delay_grows_exponentially_up_to_the_cap() -> None:
    exact = [backoff_delay(n, 2.0, 100.0, jitter=0) for n in range(0, 10)]
    assert exact == [2, 2, 4, 8, 16, 32, 64, 100, 100, 100]
    assert backoff_delay(90, 1.0, 300.0, jitter=0) == 300


def test_backoff_delay_jitter_stays_within_bounds() -> None:
    samples = [backoff_delay(3, 1.0, 300.0, jitter=0.25) for _ in range(200)]
    assert all(3.0 <= d <= 5.0 for d in samples)
    assert len(set(samples)) > 1, "jitter must spread retries of jobs failing together"


def test_backoff_delay_never_exceeds_the_configured_maximum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """max_delay_seconds is a maximum: jitter may shorten a capped delay, not lengthen it."""
    monkeypatch.setattr("hub.jobs.worker.random.uniform", lambda low, high: high)  # worst case
    assert backoff_delay(20, 1.0, 300.0) <= 300.0
    assert backoff_delay(2, 1.0, 300.0) == pytest.approx(2.4)


async def test_worker_backoff_grows_between_unexpected_failures(db: Database) -> None:
    calls = 0

    async def handler(job: Job) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ValueError(f"boom {calls}")

    worker = make_worker(db, base_delay_seconds=100, max_delay_seconds=10_000)
    worker.register("test", handler)
    (job_id,) = await add(db, ("conv:1", "a", "i-a"))
    waits: list[float] = []
    async with running(worker):
        for _ in range(2):
            await worker.drain()
            item = await row(db, job_id)
            assert item.status == "pending"
            waits.append((item.next_attempt_at - utcnow()).total_seconds())
            await make_due(db, job_id)
        await worker.drain()
    # attempt 1 → ~100 s, attempt 2 → ~200 s (jitter ±20 %)
    assert 75 <= waits[0] <= 121
    assert 155 <= waits[1] <= 241
    item = await row(db, job_id)
    assert (item.status, item.attempts) == ("done", 3)


async def test_unexpected_exception_is_retried(db: Database) -> None:
    calls: list[int] = []

    async def handler(job: Job) -> None:
        calls.append(job.attempts)
        if len(calls) == 1:
            raise KeyError("surprise")

    worker = make_worker(db)
    worker.register("test", handler)
    (job_id,) = await add(db, ("conv:1", "a", "i-a"))
    async with running(worker):
        await worker.drain()
        item = await row(db, job_id)
        assert (item.status, item.attempts) == ("pending", 1)
        assert "internal error" in (item.last_error or "")
        assert "surprise" in (item.last_error or "")
        await make_due(db, job_id)
        await worker.drain()
    assert calls == [0, 1]
    assert (await row(db, job_id)).status == "done"


async def test_permanent_failure_dead_letters_and_calls_the_dead_handler(db: Database) -> None:
    dead: list[tuple[Job, str, str | None]] = []
    calls = 0

    async def handler(job: Job) -> None:
        nonlocal calls
        calls += 1
        raise PermanentFailure("phone number not on WhatsApp", code="not_on_channel")

    async def on_dead(job: Job, reason: str, code: str | None) -> None:
        dead.append((job, reason, code))

    worker = make_worker(db)
    worker.register("test", handler, on_dead)
    (job_id,) = await add(db, ("conv:1", "a", "i-a"))
    async with running(worker):
        await worker.drain()
    assert calls == 1
    assert [(j.id, j.payload, r, c) for j, r, c in dead] == [
        (job_id, {"name": "a"}, "phone number not on WhatsApp", "not_on_channel")
    ]
    item = await row(db, job_id)
    assert (item.status, item.attempts) == ("dead", 1)
    assert item.last_error == "phone number not on WhatsApp"
    assert item.done_at is not None and item.leased_until is None


async def test_max_attempts_dead_letters(db: Database) -> None:
    dead: list[tuple[str, str | None]] = []
    attempts_seen: list[int] = []

    async def handler(job: Job) -> None:
        attempts_seen.append(job.attempts)
        raise RetryLater(f"still down ({job.attempts})", delay=0)

    async def on_dead(job: Job, reason: str, code: str | None) -> None:
        dead.append((reason, code))

    worker = make_worker(db, max_attempts=3)
    worker.register("test", handler, on_dead)
    (job_id,) = await add(db, ("conv:1", "a", "i-a"))
    async with running(worker):
        await worker.drain()
    assert attempts_seen == [0, 1, 2]
    assert dead == [("still down (2)", None)]
    item = await row(db, job_id)
    assert (item.status, item.attempts) == ("dead", 3)


async def test_a_failing_dead_handler_does_not_stop_the_worker(db: Database) -> None:
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.payload["name"])
        if job.payload["name"] == "a":
            raise PermanentFailure("no")

    async def on_dead(job: Job, reason: str, code: str | None) -> None:
        raise RuntimeError("the room is gone too")

    worker = make_worker(db)
    worker.register("test", handler, on_dead)
    a, b = await add(db, ("conv:1", "a", "i-a"), ("conv:1", "b", "i-b"))
    async with running(worker):
        await worker.drain()
    assert ran == ["a", "b"]
    assert (await row(db, a)).status == "dead"
    assert (await row(db, b)).status == "done"


@pytest.mark.parametrize(
    ("error", "status", "delay"),
    [
        (MatrixError(429, "M_LIMIT_EXCEEDED", "slow down", retry_after_ms=7_000), "pending", 7),
        (MatrixError(403, "M_FORBIDDEN", "not in room"), "dead", None),
        (MatrixError(502, "M_UNKNOWN", "bad gateway"), "pending", HOUR),
        (MatrixUnavailable("connection refused"), "pending", HOUR),
        (
            ExternalError("the reply window closed", permanent=True, code=WINDOW_CLOSED),
            "dead",
            None,
        ),
        (ExternalError("provider busy", permanent=False, retry_after=30), "pending", 30),
    ],
    ids=["matrix-429", "matrix-403", "matrix-502", "matrix-down", "permanent", "retry-after"],
)
async def test_external_errors_are_classified(
    db: Database, error: ExternalError, status: str, delay: float | None
) -> None:
    dead: list[str | None] = []

    async def handler(job: Job) -> None:
        raise error

    async def on_dead(job: Job, reason: str, code: str | None) -> None:
        dead.append(code)

    worker = make_worker(db)
    worker.register("test", handler, on_dead)
    (job_id,) = await add(db, ("conv:1", "a", "i-a"))
    async with running(worker):
        await worker.drain()
    item = await row(db, job_id)
    assert (item.status, item.attempts) == (status, 1)
    assert item.last_error == str(error) == error.human
    # The dead handler hears the machine-readable reason (a Matrix errcode, WINDOW_CLOSED).
    assert dead == ([error.code] if status == "dead" else [])
    if delay is not None:
        wait = (item.next_attempt_at - utcnow()).total_seconds()
        assert 0.75 * delay <= wait <= 1.21 * delay


# --- Finish: the handler's DB writes commit with "done" ---------------------------------------


def add_customer(name: str) -> Finish:
    def finish(tx: Tx) -> None:
        tx.orm.add(Customer(display_name=name))

    return finish


async def customers(db: Database) -> list[str | None]:
    return await db.read(
        lambda tx: list(tx.orm.scalars(select(Customer.display_name).order_by(Customer.id)))
    )


async def test_finish_writes_commit_with_done(db: Database) -> None:
    async def handler(job: Job) -> Finish:
        return add_customer(job.payload["name"])

    worker = make_worker(db)
    worker.register("test", handler)
    (job_id,) = await add(db, ("conv:1", "alice", "i-a"))
    async with running(worker):
        await worker.drain()
    assert await customers(db) == ["alice"]
    assert (await row(db, job_id)).status == "done"


async def test_a_finish_may_write_with_core_statements_too(db: Database) -> None:
    """One Finish(tx) for both: the ORM (tx.orm) and Core statements (tx.conn)."""

    async def handler(job: Job) -> Finish:
        def finish(tx: Tx) -> None:
            tx.conn.execute(insert(Customer).values(display_name="core " + job.payload["name"]))
            tx.orm.add(Customer(display_name="orm " + job.payload["name"]))

        return finish

    worker = make_worker(db)
    worker.register("test", handler)
    (job_id,) = await add(db, ("conv:1", "bob", "i-b"))
    async with running(worker):
        await worker.drain()
    assert await customers(db) == ["core bob", "orm bob"]
    assert (await row(db, job_id)).status == "done"


async def test_failing_finish_rolls_back_and_the_job_is_retried(db: Database) -> None:
    finishes = 0

    async def handler(job: Job) -> Finish:
        def finish(tx: Tx) -> None:
            nonlocal finishes
            finishes += 1
            tx.orm.add(Customer(display_name=f"attempt {finishes}"))
            tx.orm.flush()
            if finishes == 1:
                raise RuntimeError("constraint violated")

        return finish

    worker = make_worker(db)
    worker.register("test", handler)
    (job_id,) = await add(db, ("conv:1", "a", "i-a"))
    async with running(worker):
        await eventually(lambda: finishes >= 1)
    # stop() waited for the job in flight: its bookkeeping is over.
    assert await customers(db) == []  # the finish's write was rolled back
    assert (await row(db, job_id)).status == "pending"

    await make_due(db, job_id, release_lease=True)  # however long that takes
    async with running(make_worker(db, worker_id="worker-b")) as again:
        again.register("test", handler)
        await again.drain()
    assert await customers(db) == ["attempt 2"]
    assert (await row(db, job_id)).status == "done"


async def test_a_finish_that_always_fails_is_counted_and_dead_lettered(db: Database) -> None:
    """A Finish error is a failed attempt like any other: counted, backed off, and after
    max_attempts dead-lettered so a human hears of it (not retried forever in silence)."""
    finishes = 0
    dead: list[str] = []

    async def handler(job: Job) -> Finish:
        def finish(tx: Tx) -> None:
            nonlocal finishes
            finishes += 1
            raise RuntimeError("duplicate key in the handler's own table")

        return finish

    async def on_dead(job: Job, reason: str, code: str | None) -> None:
        dead.append(reason)

    job_id = 0
    for attempt in (1, 2):
        worker = make_worker(db, max_attempts=2)
        worker.register("test", handler, on_dead)
        if attempt == 1:
            (job_id,) = await add(db, ("conv:1", "a", "i-a"))
        async with running(worker):
            await eventually(lambda: finishes >= attempt)  # noqa: B023 (awaited right here)
        item = await row(db, job_id)
        assert item.attempts == attempt, "a failed Finish must count as an attempt"
        assert "duplicate key" in (item.last_error or "")
        await make_due(db, job_id, release_lease=True)
    item = await row(db, job_id)
    assert item.status == "dead"
    assert len(dead) == 1 and "duplicate key" in dead[0]


@pytest.mark.parametrize("same_key", [False, True], ids=["other-key", "same-key"])
async def test_a_job_queued_by_a_finish_starts_at_once(
    db: Database, monkeypatch: pytest.MonkeyPatch, same_key: bool
) -> None:
    """The Finish's write is the worker's own, with the worker as the sink: a job it queues
    is handed over (another key) or leased by completing the first (the same key), never
    left for the poll (a minute here)."""
    seen: list[tuple[str, Any]] = []
    follow_up_ran = asyncio.Event()
    key = "conv:1" if same_key else "conv:2"

    async def handler(job: Job) -> Finish | None:
        seen.append((job.payload["name"], job.context))
        if job.payload["name"] != "first":
            follow_up_ran.set()
            return None

        def finish(tx: Tx) -> None:
            queue(tx, ((key, "follow-up", "i-f"),))

        return finish

    worker = make_worker(db, poll_seconds=60)
    worker.register("test", handler)
    claims = count_claims(monkeypatch)
    async with running(worker, sink=True):
        await eventually(lambda: claims)  # the start-up claim is behind us
        await worker.drain()
        claims.clear()
        await add(db, ("conv:1", "first", "i-1"))
        await asyncio.wait_for(follow_up_ran.wait(), 5)
        assert claims == []
        await worker.drain()
    # Handed over: the context came from the queuing transaction. Chained: none (no preload).
    assert seen == [("first", "first"), ("follow-up", None if same_key else "follow-up")]
    assert [i.status for i in await rows(db)] == ["done", "done"]


# --- leases -----------------------------------------------------------------------------------


async def test_a_lease_held_by_another_worker_is_respected_until_it_expires(
    db: Database,
) -> None:
    (held,) = await add(db, ("conv:1", "held", "held"))
    await set_row(db, held, leased_until=utcnow() + timedelta(minutes=10), leased_by="worker-other")
    worker, ran = recording_worker(db)
    async with running(worker):
        await add(db, ("conv:2", "sentinel", "sentinel"), ("conv:1", "after", "after"))
        worker.wake()
        # The round that ran the sentinel saw the held job (older) and left it alone;
        # the later job of its conversation waits behind it.
        await eventually(lambda: _done(db, "sentinel"))
        assert ran == ["sentinel"]
        item = await row(db, held)
        assert (item.status, item.leased_by) == ("pending", "worker-other")

        # The other worker died: ten minutes later its lease has expired.
        await make_due(db, held, release_lease=True)
        worker.wake()
        await eventually(lambda: _done(db, "after"))
    assert ran == ["sentinel", "held", "after"]
    item = await row(db, held)
    assert (item.status, item.leased_by, item.attempts) == ("done", "worker-a", 1)


async def test_leases_of_dead_processes_of_this_machine_are_released_at_start(
    db: Database,
) -> None:
    """A hub process of this machine killed while holding leases: the next worker to start
    releases them at once instead of waiting for them to run out. Leases of live processes,
    of this very process and of other machines are left alone."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await child.wait()  # reaped: its pid names no process now
    prefix = _local_prefix()
    holders = {
        "of-dead": f"{prefix}{child.pid}.dead01",
        "of-live": f"{prefix}{os.getppid()}.live01",
        "of-this": f"{prefix}{os.getpid()}.this01",
        "of-other-host": "0123456789ab.4026531836.1.other1",
    }
    ids = await add(db, *((f"conv:{name}", name, name) for name in holders))
    until = utcnow() + timedelta(minutes=10)
    for job_id, holder in zip(ids, holders.values(), strict=True):
        await set_row(db, job_id, leased_until=until, leased_by=holder)
    worker, ran = recording_worker(db)
    async with running(worker):
        await eventually(lambda: ran)  # not due before the worker released it: wait for it
        await worker.drain()
    assert ran == ["of-dead"]
    assert [(i.status, i.leased_by) for i in await rows(db)] == [
        ("done", "worker-a"),
        ("pending", holders["of-live"]),
        ("pending", holders["of-this"]),
        ("pending", holders["of-other-host"]),
    ]


# --- drain ------------------------------------------------------------------------------------


async def test_drain_waits_for_running_jobs(db: Database) -> None:
    finished = False

    async def handler(job: Job) -> None:
        nonlocal finished
        for _ in range(20):
            await asyncio.sleep(0)  # a handler that takes several loop turns
        finished = True

    worker = make_worker(db)
    worker.register("test", handler)
    (job_id,) = await add(db, ("conv:1", "a", "i-a"))
    async with running(worker):
        await worker.drain()
        assert finished
        assert (await row(db, job_id)).status == "done"


async def test_drain_ignores_jobs_scheduled_for_later(db: Database) -> None:
    worker, ran = recording_worker(db)
    await add(db, ("conv:1", "later", "later"), delay=HOUR)
    async with running(worker):
        await worker.drain(timeout=5)
    assert ran == []


async def test_drain_times_out_when_a_job_never_finishes(db: Database) -> None:
    never = asyncio.Event()

    async def handler(job: Job) -> None:
        await never.wait()

    worker = make_worker(db)
    worker.register("test", handler)
    await add(db, ("conv:1", "stuck", "stuck"))
    async with running(worker):
        with pytest.raises(TimeoutError):
            await worker.drain(timeout=0.3)
        never.set()


async def test_drain_returns_when_the_rest_waits_behind_a_deferred_job(db: Database) -> None:
    """a2 is due but cannot run before a1, which retries in an hour: nothing can run now,
    so drain must return rather than time out."""

    async def handler(job: Job) -> None:
        if job.payload["name"] == "a1":
            raise RetryLater("later", delay=HOUR)

    worker = make_worker(db)
    worker.register("test", handler)
    await add(db, ("conv:A", "a1", "a1"), ("conv:A", "a2", "a2"))
    async with running(worker):
        await worker.drain(timeout=3)
    assert (await row_by_name(db, "a2")).status == "pending"


# -- jobs handed over by the transaction that queues them (LeaseOffer) -----------------------


async def test_a_job_queued_with_the_worker_as_sink_starts_without_a_claim(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, Any, str, str | None]] = []

    async def handler(job: Job) -> None:
        # Started once its transaction committed: its row is there for others to read,
        # leased to this worker by that transaction.
        item = await row(db, job.id)
        seen.append((job.payload["name"], job.context, item.status, item.leased_by))

    # Polls a minute apart: nothing but the hand-over can start the job within the test.
    worker = make_worker(db, poll_seconds=60)
    worker.register("test", handler)
    claims = count_claims(monkeypatch)
    async with running(worker, sink=True):
        await eventually(lambda: claims)  # the worker's first (empty) claim
        await worker.drain()
        claims.clear()
        offers: list[LeaseOffer | None] = []
        (job_id,) = await add(db, ("conv:1", "alice", "i-a"), offers=offers)
        (offer,) = offers
        assert offer is not None and offer.worker_id == "worker-a"
        assert [r[0] for r, _ in offer.taken] == [job_id] and offer.missed == []
        await eventually(lambda: seen)
        assert claims == []
        await worker.drain()
    # The context travelled with the job: it was not claimed (claimed jobs carry none).
    assert seen == [("alice", "alice", "pending", "worker-a")]
    assert [i.status for i in await rows(db)] == ["done"]


async def test_handover_leaves_later_jobs_of_a_key_in_order(db: Database) -> None:
    worker, seen = context_worker(db)
    offers: list[LeaseOffer | None] = []
    async with running(worker, sink=True):
        await add(db, ("conv:1", "first", "i-1"), ("conv:1", "second", "i-2"), offers=offers)
        (offer,) = offers
        assert offer is not None and len(offer.taken) == 1 and offer.missed == ["conv:1"]
        await worker.drain()
    assert seen == [("first", "first"), ("second", None)]


@pytest.mark.parametrize("how", ["background", "urgent", "in-a-group"])
async def test_a_write_that_raises_settles_its_offer_as_not_committed(
    db: Database, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Its jobs were rolled back: none starts (no phantom job), and an urgent one does not
    keep the burst gate (a minute here) closed for the jobs handed over after it."""
    monkeypatch.setattr(handover, "BURST_WAIT", 60.0)
    worker, seen = recording_worker(db, poll_seconds=60)
    sink = RecordingSink(worker)

    def queue_then_fail(tx: Tx) -> None:
        queue(tx, (("conv:1", "phantom", "i-p"),))
        raise RuntimeError("disk full")

    async with running(worker, sink=sink):
        await worker.drain()
        if how == "in-a-group":
            async with db.writing():  # the lock is held: both writes wait, then go together
                failing = asyncio.create_task(db.write(queue_then_fail, urgent=True))
                kept = asyncio.create_task(add(db, ("conv:2", "kept", "i-k"), urgent=True))
                for _ in range(3):
                    await asyncio.sleep(0)
            await kept
        else:
            failing = asyncio.create_task(db.write(queue_then_fail, urgent=how == "urgent"))
        with pytest.raises(RuntimeError, match="disk full"):
            await failing
        failed = [(o, q) for o, q, committed in sink.writes if not committed]
        assert len(failed) == 1
        offer, queued = failed[0]
        assert offer is not None and [r[2] for r, _ in offer.taken] == ["conv:1"]
        assert not queued
        await add(db, ("conv:3", "after", "i-a"), urgent=True)
        await eventually(lambda: "after" in seen)
        await worker.drain()
        assert "conv:1" not in worker.inflight
    assert sorted(seen) == (["after", "kept"] if how == "in-a-group" else ["after"])
    assert "phantom" not in [i.payload["name"] for i in await rows(db)]


@pytest.mark.parametrize("urgent", [False, True], ids=["background", "urgent"])
async def test_a_cancelled_write_that_commits_still_starts_the_jobs_it_took(
    db: Database, urgent: bool
) -> None:
    """The caller went away (a webhook's client hung up, a timeout) while its unit ran: the
    unit commits anyway, and its jobs must run (here the poll is a minute, the lease ten)."""
    worker, seen = recording_worker(db, poll_seconds=60)
    storing, may_commit = threading.Event(), threading.Event()

    def store(tx: Tx) -> None:
        queue(tx, (("conv:1", "alice", "i-a"),))
        storing.set()
        assert may_commit.wait(10)

    async with running(worker, sink=True):
        await worker.drain()
        write = asyncio.create_task(db.write(store, urgent=urgent))
        assert await asyncio.to_thread(storing.wait, 10)
        write.cancel()
        may_commit.set()
        with pytest.raises(asyncio.CancelledError):
            await write
        assert [i.payload["name"] for i in await rows(db)] == ["alice"]  # committed
        await eventually(lambda: seen, timeout=3)
        await worker.drain()
    assert seen == ["alice"]


async def test_a_burst_of_handovers_starts_together(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs handed over while other urgent stores of the burst still run wait for them, so
    the burst reaches Synapse together."""
    monkeypatch.setattr(handover, "BURST_WAIT", 60.0)  # only the burst's end opens the gate
    worker, started = recording_worker(db, poll_seconds=60)
    first_storing, first_may_commit = threading.Event(), threading.Event()
    second_may_commit = threading.Event()

    def store(tx: Tx, name: str, storing: threading.Event, may_commit: threading.Event) -> None:
        queue(tx, ((f"conv:{name}", name, f"i-{name}"),))
        storing.set()
        assert may_commit.wait(10)

    async with running(worker, sink=True):
        await worker.drain()
        first = asyncio.create_task(
            db.write(store, "first", first_storing, first_may_commit, urgent=True)
        )
        # "first" is in the database thread: "second" waits for the next group.
        assert await asyncio.to_thread(first_storing.wait, 10)
        second = asyncio.create_task(
            db.write(store, "second", threading.Event(), second_may_commit, urgent=True)
        )
        await asyncio.sleep(0)
        first_may_commit.set()
        await first  # committed while "second" is still storing
        for _ in range(20):
            await asyncio.sleep(0)
        assert started == []  # held for the rest of the burst
        second_may_commit.set()
        await second
        await worker.drain()
    assert sorted(started) == ["first", "second"]


async def test_a_job_handed_over_alone_is_not_held(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handover, "BURST_WAIT", 60.0)
    worker, started = recording_worker(db, poll_seconds=60)
    async with running(worker, sink=True):
        await worker.drain()
        await add(db, ("conv:1", "alone", "i-a"), urgent=True)
        await eventually(lambda: started, timeout=5)
    assert started == ["alone"]


async def test_a_taken_job_never_started_runs_once_its_lease_ends(db: Database) -> None:
    """The process that queued it died between commit and hand-over: the lease expires
    (or is released at the next start) and any worker claims it."""

    class Crashed:
        """A worker's sink whose process dies as the write commits."""

        def offer(self, urgent: bool) -> LeaseOffer | None:
            return LeaseOffer("worker-gone", 600, set(), 4, urgent=urgent)

        def settled(self, offer: LeaseOffer | None, queued: bool, committed: bool) -> None:
            pass

    db.sink = Crashed()
    offers: list[LeaseOffer | None] = []
    await add(db, ("conv:1", "alice", "i-a"), offers=offers)
    db.sink = None
    assert offers[0] is not None and offers[0].taken
    worker, seen = recording_worker(db)
    async with running(worker):
        await worker.drain()
        assert seen == []  # still leased to the process that died
        await set_row(db, None, leased_until=utcnow() - timedelta(1))
        worker.wake()
        await worker.drain()
    assert seen == ["alice"]


async def test_the_next_job_of_a_key_comes_with_its_preload(db: Database) -> None:
    seen: list[tuple[str, Any]] = []

    async def handler(job: Job) -> None:
        seen.append((job.payload["name"], job.context))

    def preload(conn: Any, payload: dict[str, Any]) -> str:
        assert conn is not None  # runs inside the finishing transaction
        return f"preloaded {payload['name']}"

    worker = make_worker(db)
    worker.register("test", handler, preload=preload)
    await add(db, ("conv:1", "first", "i-1"), ("conv:1", "second", "i-2"))
    async with running(worker):
        await worker.drain()
    # The first job was claimed (no context); the second was leased when the first finished.
    assert seen == [("first", None), ("second", "preloaded second")]


async def test_the_next_message_of_a_busy_conversation_needs_no_claim(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queued while its conversation's chain runs, a job is leased by that chain when the
    running job finishes: no claim transaction (one per message of a busy chat, before)."""
    seen: list[str] = []
    started, release, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handler(job: Job) -> None:
        seen.append(job.payload["name"])
        if job.payload["name"] == "first":
            started.set()
            await release.wait()
        else:
            done.set()

    worker = make_worker(db, poll_seconds=60)
    worker.register("test", handler)
    claims = count_claims(monkeypatch)
    async with running(worker, sink=True):
        # The worker's first (empty) claim at start is behind us; it waits for a wake now.
        await eventually(lambda: claims)
        await worker.drain()
        claims.clear()
        await add(db, ("conv:1", "first", "i-1"))
        await asyncio.wait_for(started.wait(), 10)
        offers: list[LeaseOffer | None] = []
        await add(db, ("conv:1", "second", "i-2"), offers=offers)
        assert offers[0] is not None and offers[0].missed == ["conv:1"]
        release.set()
        await asyncio.wait_for(done.wait(), 10)
        assert claims == []
        await worker.drain()
    assert seen == ["first", "second"]


async def test_a_job_queued_while_every_slot_is_busy_runs_when_one_frees(
    db: Database,
) -> None:
    """No slot: the write cannot hand its job over; the worker claims it as soon as the
    running job ends, without waiting for the poll."""
    seen: list[str] = []
    busy, release, ran = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handler(job: Job) -> None:
        seen.append(job.payload["name"])
        if job.payload["name"] == "busy":
            busy.set()
            await release.wait()
        else:
            ran.set()

    worker = make_worker(db, concurrency=1, poll_seconds=60)
    worker.register("test", handler)
    async with running(worker, sink=True):
        await worker.drain()
        await add(db, ("conv:A", "busy", "i-busy"))
        await asyncio.wait_for(busy.wait(), 10)
        offers: list[LeaseOffer | None] = []
        await add(db, ("conv:B", "waiting", "i-w"), offers=offers)
        (offer,) = offers
        assert offer is not None and offer.room == 0
        assert offer.taken == [] and offer.missed == ["conv:B"]
        release.set()
        await asyncio.wait_for(ran.wait(), 10)
        await worker.drain()
    assert seen == ["busy", "waiting"]


@pytest.mark.parametrize(
    "orm_inside",
    [True, False],
    ids=["orm-used-inside", "jobs-only"],
)
async def test_a_savepoint_undoes_the_jobs_queued_inside_it(db: Database, orm_inside: bool) -> None:
    """Rolled back with the block: the jobs' rows, and in the LeaseOffer what they took (the
    keys, the slots) and what they missed; the rest of the unit goes on."""
    worker, seen = context_worker(db, poll_seconds=60)

    def unit(tx: Tx) -> tuple[list[str], list[str], set[str], int, bool]:
        queue(tx, (("conv:1", "kept", "i-kept"),))
        with contextlib.suppress(RuntimeError), tx.savepoint():
            if orm_inside:
                tx.orm.add(Customer(display_name="undone"))
            queue(tx, (("conv:2", "undone", "i-undone"), ("conv:1", "undone too", "i-too")))
            raise RuntimeError("this part failed")
        offer = tx.offer
        assert offer is not None
        state = ([r[2] for r, _ in offer.taken], list(offer.missed), set(offer.busy), offer.room)
        queue(tx, (("conv:2", "again", "i-again"),))  # conv:2 and the slot are free again
        return (*state, tx.queued)

    async with running(worker, sink=True):
        await worker.drain()
        taken, missed, busy, room, queued = await db.write(unit)
        await worker.drain()
    assert (taken, missed, busy, room, queued) == (["conv:1"], [], {"conv:1"}, 3, True)
    assert sorted(seen) == [("again", "again"), ("kept", "kept")]
    assert [i.payload["name"] for i in await rows(db)] == ["kept", "again"]
    assert await customers(db) == []


async def test_a_savepoint_that_undid_the_only_job_leaves_nothing_queued(db: Database) -> None:
    def unit(tx: Tx) -> bool:
        with contextlib.suppress(RuntimeError), tx.savepoint():
            queue(tx, (("conv:1", "undone", "i-undone"),))
            raise RuntimeError("this part failed")
        return tx.queued

    assert await db.write(unit) is False
    assert await rows(db) == []


# -- where writers do not take turns (PostgreSQL) -----------------------------------------------


async def test_where_writes_are_not_serialised_jobs_are_claimed_when_the_commit_wakes_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No hand-over there (several processes write at once): the commit that queued a job
    wakes the worker, which claims it without waiting for the poll. An SQLite file opened by
    URI runs like PostgreSQL: through the async engine, writers not serialised."""
    monkeypatch.chdir(tmp_path)  # hub.db.engine makes the "file:..." path's folder here
    db = open_database(f"sqlite+aiosqlite:///file:{tmp_path / 'jobs.db'}?uri=true")
    claims = count_claims(monkeypatch)
    try:
        await migrate(db)
        assert not db.serialised
        worker, seen = context_worker(db, poll_seconds=60)
        async with running(worker, sink=True):
            await eventually(lambda: claims)  # the worker's first (empty) claim
            await worker.drain()
            claims.clear()
            offers: list[LeaseOffer | None] = []
            await add(db, ("conv:1", "claimed", "i-c"), offers=offers)
            assert offers == [None]
            await eventually(lambda: seen, timeout=5)
            assert len(claims) >= 1
            await worker.drain()
        assert seen == [("claimed", None)]
        assert [i.status for i in await rows(db)] == ["done"]
    finally:
        await db.close()
