"""The outbox as a unit: enqueue, claim, run, retry, dead-letter, ordering, leases, drain.

Runs on a throwaway SQLite file (the real engine with migrations): the queue *is* SQL.
Time never passes in these tests: a job "later" is moved to "now" by editing its row, so
nothing depends on sleeping or on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.config import OutboxConfig
from hub.core import outbox
from hub.core.outbox import (
    Finish,
    Job,
    OutboxWorker,
    PermanentFailure,
    RetryLater,
    backoff_delay,
    enqueue,
)
from hub.db import hot
from hub.db.engine import create_engine, database_of, migrate, session_factory
from hub.db.models import Customer, OutboxItem, utcnow
from hub.matrix.client import MatrixError, MatrixUnavailable

Sessions = async_sessionmaker[AsyncSession]
HOUR = 3600.0


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Sessions]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    await migrate(engine)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


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


def make_worker(sessions: Sessions, **overrides: Any) -> OutboxWorker:
    worker_id = overrides.pop("worker_id", "worker-a")
    return OutboxWorker(sessions, make_config(**overrides), worker_id=worker_id)


def recording_worker(sessions: Sessions, **overrides: Any) -> tuple[OutboxWorker, list[str]]:
    """A worker whose "test" handler only records the names of the jobs it ran, in order."""
    worker = make_worker(sessions, **overrides)
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.payload["name"])

    worker.register("test", handler)
    return worker, ran


@contextlib.asynccontextmanager
async def running(worker: OutboxWorker) -> AsyncIterator[OutboxWorker]:
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.stop()
        await asyncio.wait_for(task, 10)


async def add(
    sessions: Sessions, *jobs: tuple[str, str, str], kind: str = "test", delay: float = 0
) -> list[int]:
    """Enqueue (ordering_key, name, idempotency_key) jobs in one transaction; their ids."""
    async with sessions.begin() as s:
        for key, name, idem in jobs:
            await enqueue(s, kind, key, {"name": name}, idem, delay=delay)
    async with sessions() as s:
        ids = await s.scalars(
            select(OutboxItem.id).where(OutboxItem.idempotency_key.in_([j[2] for j in jobs]))
        )
        return sorted(ids)


async def row(sessions: Sessions, job_id: int) -> OutboxItem:
    async with sessions() as s:
        item = await s.get(OutboxItem, job_id)
        assert item is not None
        return item


async def row_by_name(sessions: Sessions, name: str) -> OutboxItem:
    async with sessions() as s:
        items = (await s.scalars(select(OutboxItem))).all()
    (item,) = [i for i in items if i.payload.get("name") == name]
    return item


async def make_due(sessions: Sessions, job_id: int, *, release_lease: bool = False) -> None:
    """Let time pass for one job: its retry (and optionally its lease) is due now."""
    values: dict[str, Any] = {"next_attempt_at": utcnow() - timedelta(seconds=1)}
    if release_lease:
        values["leased_until"] = utcnow() - timedelta(seconds=1)
    async with sessions.begin() as s:
        await s.execute(update(OutboxItem).where(OutboxItem.id == job_id).values(**values))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll until check() holds; fail with a clear message otherwise."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await check():
        if loop.time() > end:
            raise AssertionError(f"condition not reached within {timeout}s")
        await asyncio.sleep(0.01)


def status_is(sessions: Sessions, job_id: int, status: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await row(sessions, job_id)).status == status

    return check


def assert_close(actual: datetime, low: datetime, high: datetime) -> None:
    assert low <= actual <= high, f"{actual} not within [{low}, {high}]"


# --- enqueue ----------------------------------------------------------------------------------


async def test_enqueue_is_idempotent(sessions: Sessions) -> None:
    async with sessions.begin() as s:
        assert await enqueue(s, "k", "conv:1", {"n": 1}, "idem-1") is True
        assert await enqueue(s, "k", "conv:1", {"n": 2}, "idem-1") is False
    async with sessions.begin() as s:
        assert await enqueue(s, "other", "conv:9", {"n": 3}, "idem-1") is False
        assert await enqueue(s, "k", "conv:1", {"n": 4}, "idem-2") is True
    async with sessions() as s:
        items = (await s.scalars(select(OutboxItem).order_by(OutboxItem.id))).all()
    assert [(i.idempotency_key, i.payload, i.kind) for i in items] == [
        ("idem-1", {"n": 1}, "k"),
        ("idem-2", {"n": 4}, "k"),
    ]
    assert all(i.status == "pending" and i.attempts == 0 for i in items)


async def test_enqueue_belongs_to_the_callers_transaction(sessions: Sessions) -> None:
    with pytest.raises(RuntimeError):
        async with sessions.begin() as s:
            await enqueue(s, "k", "conv:1", {}, "rolled-back")
            raise RuntimeError("the state change failed")
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(OutboxItem)) == 0


async def test_enqueue_delay_sets_next_attempt(sessions: Sessions) -> None:
    before = utcnow()
    async with sessions.begin() as s:
        await enqueue(s, "k", "conv:1", {}, "now")
        await enqueue(s, "k", "conv:2", {}, "later", delay=90)
    after = utcnow()
    async with sessions() as s:
        items = {i.idempotency_key: i for i in await s.scalars(select(OutboxItem))}
    assert_close(items["now"].next_attempt_at, before, after)
    later = timedelta(seconds=90)
    assert_close(items["later"].next_attempt_at, before + later, after + later)


# --- running jobs -----------------------------------------------------------------------------


async def test_handlers_run_and_jobs_become_done(sessions: Sessions) -> None:
    seen: list[Job] = []

    async def handler(job: Job) -> None:
        seen.append(job)

    worker = make_worker(sessions)
    worker.register("test", handler)
    worker.register("other", handler)
    ids = await add(sessions, ("conv:1", "a", "i-a"), ("conv:2", "b", "i-b"))
    ids += await add(sessions, ("conv:1", "c", "i-c"), kind="other")
    async with running(worker):
        await worker.drain()
    assert sorted(j.id for j in seen) == ids
    by_name = {j.payload["name"]: j for j in seen}
    assert by_name["a"].kind == "test" and by_name["c"].kind == "other"
    assert by_name["b"].ordering_key == "conv:2"
    assert all(j.attempts == 0 for j in seen)
    for job_id in ids:
        item = await row(sessions, job_id)
        assert item.status == "done"
        assert item.attempts == 1
        assert item.done_at is not None
        assert item.leased_until is None
        assert item.leased_by == "worker-a"
        assert item.last_error is None


async def test_wake_starts_new_jobs_without_waiting_for_the_poll(sessions: Sessions) -> None:
    ran = asyncio.Event()

    async def handler(job: Job) -> None:
        ran.set()

    worker = make_worker(sessions, poll_seconds=60)
    worker.register("test", handler)
    async with running(worker):
        await asyncio.sleep(0)  # let the worker find the queue empty and start waiting
        (job_id,) = await add(sessions, ("conv:1", "a", "i-a"))
        worker.wake()
        await asyncio.wait_for(ran.wait(), 10)
        await eventually(status_is(sessions, job_id, "done"))


async def test_register_twice_is_refused(sessions: Sessions) -> None:
    worker = make_worker(sessions)

    async def handler(job: Job) -> None:
        return None

    worker.register("test", handler)
    with pytest.raises(ValueError, match="twice"):
        worker.register("test", handler)


async def test_job_of_unknown_kind_is_dead_lettered(sessions: Sessions) -> None:
    worker = make_worker(sessions)
    (job_id,) = await add(sessions, ("conv:1", "a", "i-a"), kind="nobody.handles.this")
    async with running(worker):
        await worker.drain()
    item = await row(sessions, job_id)
    assert item.status == "dead"
    assert "no handler" in (item.last_error or "")


# --- ordering ---------------------------------------------------------------------------------


async def test_one_key_runs_in_order_while_other_keys_proceed(sessions: Sessions) -> None:
    """The head of conv:A is in flight: conv:B runs meanwhile, A's later jobs wait."""
    started: list[str] = []
    release_a1 = asyncio.Event()

    async def handler(job: Job) -> None:
        started.append(job.payload["name"])
        if job.payload["name"] == "a1":
            await release_a1.wait()

    worker = make_worker(sessions, concurrency=4)
    worker.register("test", handler)
    await add(
        sessions,
        ("conv:A", "a1", "a1"),
        ("conv:A", "a2", "a2"),
        ("conv:A", "a3", "a3"),
        ("conv:B", "b1", "b1"),
        ("conv:B", "b2", "b2"),
    )
    async with running(worker):
        # b2 can only be claimed after b1 finished, i.e. in a later claim round than a1's;
        # that round looked at a2 (an older due job) and had to leave it alone.
        await eventually(lambda: _done(sessions, "b2"))
        assert "a2" not in started and "a3" not in started
        assert started[:1] == ["a1"]
        release_a1.set()
        await worker.drain()
    assert [n for n in started if n.startswith("a")] == ["a1", "a2", "a3"]
    assert [n for n in started if n.startswith("b")] == ["b1", "b2"]


async def _done(sessions: Sessions, name: str) -> bool:
    return (await row_by_name(sessions, name)).status == "done"


async def test_failing_head_blocks_its_key_until_it_succeeds(sessions: Sessions) -> None:
    started: list[str] = []
    failures = {"a1": 1}

    async def handler(job: Job) -> None:
        name = job.payload["name"]
        started.append(name)
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            raise RetryLater("try again in an hour", delay=HOUR)

    worker = make_worker(sessions, concurrency=4)
    worker.register("test", handler)
    a1, _a2, _a3, _b1, _b2 = await add(
        sessions,
        ("conv:A", "a1", "a1"),
        ("conv:A", "a2", "a2"),
        ("conv:A", "a3", "a3"),
        ("conv:B", "b1", "b1"),
        ("conv:B", "b2", "b2"),
    )
    async with running(worker):
        await eventually(lambda: _done(sessions, "b2"))
        await eventually(lambda: _attempted(sessions, a1))
        # A job added now, on a third key, is picked up by a claim round that also saw the
        # due a2 and a3: they must still be waiting for a1.
        await add(sessions, ("conv:C", "c1", "c1"))
        worker.wake()
        await eventually(lambda: _done(sessions, "c1"))
        assert started.count("a1") == 1
        assert "a2" not in started and "a3" not in started
        assert (await row_by_name(sessions, "a2")).status == "pending"

        await make_due(sessions, a1)  # an hour later
        worker.wake()
        await eventually(lambda: _done(sessions, "a3"))
    assert [n for n in started if n.startswith("a")] == ["a1", "a1", "a2", "a3"]


async def _attempted(sessions: Sessions, job_id: int) -> bool:
    item = await row(sessions, job_id)
    return item.attempts > 0 and item.leased_until is None


async def test_dead_head_unblocks_its_key(sessions: Sessions) -> None:
    started: list[str] = []

    async def handler(job: Job) -> None:
        started.append(job.payload["name"])
        if job.payload["name"] == "a1":
            raise PermanentFailure("the customer blocked us")

    worker = make_worker(sessions)
    worker.register("test", handler)
    await add(sessions, ("conv:A", "a1", "a1"), ("conv:A", "a2", "a2"))
    async with running(worker):
        await worker.drain()
    assert started == ["a1", "a2"]
    assert (await row_by_name(sessions, "a1")).status == "dead"
    assert (await row_by_name(sessions, "a2")).status == "done"


# --- retries and dead letters -----------------------------------------------------------------


async def test_retry_later_delay_is_honoured(sessions: Sessions) -> None:
    calls: list[Job] = []

    async def handler(job: Job) -> None:
        calls.append(job)
        if len(calls) == 1:
            raise RetryLater("429 slow down", delay=123)

    worker = make_worker(sessions)
    worker.register("test", handler)
    (job_id,) = await add(sessions, ("conv:1", "a", "i-a"))
    async with running(worker):
        before = utcnow()
        await worker.drain()  # the retry is not due: drain returns without running it
        after = utcnow()
        item = await row(sessions, job_id)
        assert len(calls) == 1
        assert item.status == "pending"
        assert item.attempts == 1
        assert item.last_error == "429 slow down"
        assert item.leased_until is None
        delay = timedelta(seconds=123)
        # The attempt failed between `before` and `after` (the worker task starts only
        # once drain awaits): the retry is due the requested delay after that.
        assert_close(item.next_attempt_at, before + delay, after + delay)

        await make_due(sessions, job_id)
        await worker.drain()
    assert [j.attempts for j in calls] == [0, 1]
    item = await row(sessions, job_id)
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
    monkeypatch.setattr(outbox.random, "uniform", lambda low, high: high)  # worst-case jitter
    assert backoff_delay(20, 1.0, 300.0) <= 300.0
    assert backoff_delay(2, 1.0, 300.0) == pytest.approx(2.4)


async def test_worker_backoff_grows_between_unexpected_failures(sessions: Sessions) -> None:
    calls = 0

    async def handler(job: Job) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ValueError(f"boom {calls}")

    worker = make_worker(sessions, base_delay_seconds=100, max_delay_seconds=10_000)
    worker.register("test", handler)
    (job_id,) = await add(sessions, ("conv:1", "a", "i-a"))
    waits: list[float] = []
    async with running(worker):
        for _ in range(2):
            await worker.drain()
            item = await row(sessions, job_id)
            assert item.status == "pending"
            waits.append((item.next_attempt_at - utcnow()).total_seconds())
            await make_due(sessions, job_id)
        await worker.drain()
    # attempt 1 → ~100 s, attempt 2 → ~200 s (jitter ±20 %)
    assert 75 <= waits[0] <= 121
    assert 155 <= waits[1] <= 241
    item = await row(sessions, job_id)
    assert (item.status, item.attempts) == ("done", 3)


async def test_unexpected_exception_is_retried(sessions: Sessions) -> None:
    calls: list[int] = []

    async def handler(job: Job) -> None:
        calls.append(job.attempts)
        if len(calls) == 1:
            raise KeyError("surprise")

    worker = make_worker(sessions)
    worker.register("test", handler)
    (job_id,) = await add(sessions, ("conv:1", "a", "i-a"))
    async with running(worker):
        await worker.drain()
        item = await row(sessions, job_id)
        assert (item.status, item.attempts) == ("pending", 1)
        assert "internal error" in (item.last_error or "")
        assert "surprise" in (item.last_error or "")
        await make_due(sessions, job_id)
        await worker.drain()
    assert calls == [0, 1]
    assert (await row(sessions, job_id)).status == "done"


async def test_permanent_failure_dead_letters_and_calls_the_dead_handler(
    sessions: Sessions,
) -> None:
    dead: list[tuple[Job, str, str | None]] = []
    calls = 0

    async def handler(job: Job) -> None:
        nonlocal calls
        calls += 1
        raise PermanentFailure("phone number not on WhatsApp", code="not_on_channel")

    async def on_dead(job: Job, reason: str, code: str | None) -> None:
        dead.append((job, reason, code))

    worker = make_worker(sessions)
    worker.register("test", handler, on_dead)
    (job_id,) = await add(sessions, ("conv:1", "a", "i-a"))
    async with running(worker):
        await worker.drain()
    assert calls == 1
    assert [(j.id, j.payload, r, c) for j, r, c in dead] == [
        (job_id, {"name": "a"}, "phone number not on WhatsApp", "not_on_channel")
    ]
    item = await row(sessions, job_id)
    assert (item.status, item.attempts) == ("dead", 1)
    assert item.last_error == "phone number not on WhatsApp"
    assert item.done_at is not None and item.leased_until is None


async def test_max_attempts_dead_letters(sessions: Sessions) -> None:
    dead: list[tuple[str, str | None]] = []
    attempts_seen: list[int] = []

    async def handler(job: Job) -> None:
        attempts_seen.append(job.attempts)
        raise RetryLater(f"still down ({job.attempts})", delay=0)

    async def on_dead(job: Job, reason: str, code: str | None) -> None:
        dead.append((reason, code))

    worker = make_worker(sessions, max_attempts=3)
    worker.register("test", handler, on_dead)
    (job_id,) = await add(sessions, ("conv:1", "a", "i-a"))
    async with running(worker):
        await worker.drain()
    assert attempts_seen == [0, 1, 2]
    assert dead == [("still down (2)", None)]
    item = await row(sessions, job_id)
    assert (item.status, item.attempts) == ("dead", 3)


async def test_a_failing_dead_handler_does_not_stop_the_worker(sessions: Sessions) -> None:
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.payload["name"])
        if job.payload["name"] == "a":
            raise PermanentFailure("no")

    async def on_dead(job: Job, reason: str, code: str | None) -> None:
        raise RuntimeError("the room is gone too")

    worker = make_worker(sessions)
    worker.register("test", handler, on_dead)
    a, b = await add(sessions, ("conv:1", "a", "i-a"), ("conv:1", "b", "i-b"))
    async with running(worker):
        await worker.drain()
    assert ran == ["a", "b"]
    assert (await row(sessions, a)).status == "dead"
    assert (await row(sessions, b)).status == "done"


@pytest.mark.parametrize(
    ("error", "status", "delay"),
    [
        (MatrixError(429, "M_LIMIT_EXCEEDED", "slow down", retry_after_ms=7_000), "pending", 7),
        (MatrixError(403, "M_FORBIDDEN", "not in room"), "dead", None),
        (MatrixError(502, "M_UNKNOWN", "bad gateway"), "pending", HOUR),
        (MatrixUnavailable("connection refused"), "pending", HOUR),
    ],
)
async def test_matrix_errors_are_classified(
    sessions: Sessions, error: Exception, status: str, delay: float | None
) -> None:
    async def handler(job: Job) -> None:
        raise error

    worker = make_worker(sessions)
    worker.register("test", handler)
    (job_id,) = await add(sessions, ("conv:1", "a", "i-a"))
    async with running(worker):
        await worker.drain()
    item = await row(sessions, job_id)
    assert (item.status, item.attempts) == (status, 1)
    assert item.last_error == str(error)
    if delay is not None:
        wait = (item.next_attempt_at - utcnow()).total_seconds()
        assert 0.75 * delay <= wait <= 1.21 * delay


# --- Finish: the handler's DB writes commit with "done" ---------------------------------------


def add_customer(name: str) -> Finish:
    async def finish(s: AsyncSession) -> None:
        s.add(Customer(display_name=name))
        await s.flush()

    return finish


async def customers(sessions: Sessions) -> list[str | None]:
    async with sessions() as s:
        return list(await s.scalars(select(Customer.display_name).order_by(Customer.id)))


async def test_finish_writes_commit_with_done(sessions: Sessions) -> None:
    async def handler(job: Job) -> Finish:
        return add_customer(job.payload["name"])

    worker = make_worker(sessions)
    worker.register("test", handler)
    (job_id,) = await add(sessions, ("conv:1", "alice", "i-a"))
    async with running(worker):
        await worker.drain()
    assert await customers(sessions) == ["alice"]
    assert (await row(sessions, job_id)).status == "done"


async def test_failing_finish_rolls_back_and_the_job_is_retried(sessions: Sessions) -> None:
    finishes = 0

    async def handler(job: Job) -> Finish:
        async def finish(s: AsyncSession) -> None:
            nonlocal finishes
            finishes += 1
            s.add(Customer(display_name=f"attempt {finishes}"))
            await s.flush()
            if finishes == 1:
                raise RuntimeError("constraint violated")

        return finish

    worker = make_worker(sessions)
    worker.register("test", handler)
    (job_id,) = await add(sessions, ("conv:1", "a", "i-a"))
    async with running(worker):
        await eventually(_count_is(lambda: finishes, 1))
    # stop() waited for the job in flight: its bookkeeping is over.
    assert await customers(sessions) == []  # the finish's write was rolled back
    assert (await row(sessions, job_id)).status == "pending"

    await make_due(sessions, job_id, release_lease=True)  # however long that takes
    async with running(make_worker(sessions, worker_id="worker-b")) as again:
        again.register("test", handler)
        await again.drain()
    assert await customers(sessions) == ["attempt 2"]
    assert (await row(sessions, job_id)).status == "done"


def _count_is(counter: Callable[[], int], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return counter() >= n

    return check


async def test_a_finish_that_always_fails_is_counted_and_dead_lettered(
    sessions: Sessions,
) -> None:
    """A Finish error is a failed attempt like any other: counted, backed off, and after
    max_attempts dead-lettered so a human hears of it (not retried forever in silence)."""
    finishes = 0
    dead: list[str] = []

    async def handler(job: Job) -> Finish:
        async def finish(s: AsyncSession) -> None:
            nonlocal finishes
            finishes += 1
            raise RuntimeError("duplicate key in the handler's own table")

        return finish

    async def on_dead(job: Job, reason: str, code: str | None) -> None:
        dead.append(reason)

    for attempt in (1, 2):
        worker = make_worker(sessions, max_attempts=2)
        worker.register("test", handler, on_dead)
        if attempt == 1:
            (job_id,) = await add(sessions, ("conv:1", "a", "i-a"))
        async with running(worker):
            await eventually(_count_is(lambda: finishes, attempt))
        item = await row(sessions, job_id)
        assert item.attempts == attempt, "a failed Finish must count as an attempt"
        assert "duplicate key" in (item.last_error or "")
        await make_due(sessions, job_id, release_lease=True)
    item = await row(sessions, job_id)
    assert item.status == "dead"
    assert len(dead) == 1 and "duplicate key" in dead[0]


# --- leases -----------------------------------------------------------------------------------


async def test_a_lease_held_by_another_worker_is_respected_until_it_expires(
    sessions: Sessions,
) -> None:
    (held,) = await add(sessions, ("conv:1", "held", "held"))
    async with sessions.begin() as s:
        await s.execute(
            update(OutboxItem)
            .where(OutboxItem.id == held)
            .values(leased_until=utcnow() + timedelta(minutes=10), leased_by="worker-other")
        )
    worker, ran = recording_worker(sessions)
    async with running(worker):
        await add(sessions, ("conv:2", "sentinel", "sentinel"), ("conv:1", "after", "after"))
        worker.wake()
        # The round that ran the sentinel saw the held job (older) and left it alone;
        # the later job of its conversation waits behind it.
        await eventually(lambda: _done(sessions, "sentinel"))
        assert ran == ["sentinel"]
        item = await row(sessions, held)
        assert (item.status, item.leased_by) == ("pending", "worker-other")

        # The other worker died: ten minutes later its lease has expired.
        await make_due(sessions, held, release_lease=True)
        worker.wake()
        await eventually(lambda: _done(sessions, "after"))
    assert ran == ["sentinel", "held", "after"]
    item = await row(sessions, held)
    assert (item.status, item.leased_by, item.attempts) == ("done", "worker-a", 1)


# --- drain ------------------------------------------------------------------------------------


async def test_drain_waits_for_running_jobs(sessions: Sessions) -> None:
    finished = False

    async def handler(job: Job) -> None:
        nonlocal finished
        for _ in range(20):
            await asyncio.sleep(0)  # a handler that takes several loop turns
        finished = True

    worker = make_worker(sessions)
    worker.register("test", handler)
    (job_id,) = await add(sessions, ("conv:1", "a", "i-a"))
    async with running(worker):
        await worker.drain()
        assert finished
        assert (await row(sessions, job_id)).status == "done"


async def test_drain_ignores_jobs_scheduled_for_later(sessions: Sessions) -> None:
    worker, ran = recording_worker(sessions)
    await add(sessions, ("conv:1", "later", "later"), delay=HOUR)
    async with running(worker):
        await worker.drain(timeout=5)
    assert ran == []


async def test_drain_times_out_when_a_job_never_finishes(sessions: Sessions) -> None:
    never = asyncio.Event()

    async def handler(job: Job) -> None:
        await never.wait()

    worker = make_worker(sessions)
    worker.register("test", handler)
    await add(sessions, ("conv:1", "stuck", "stuck"))
    async with running(worker):
        with pytest.raises(TimeoutError):
            await worker.drain(timeout=0.3)
        never.set()


async def test_drain_returns_when_the_rest_waits_behind_a_deferred_job(
    sessions: Sessions,
) -> None:
    """a2 is due but cannot run before a1, which retries in an hour: nothing can run now,
    so drain must return rather than time out."""

    async def handler(job: Job) -> None:
        if job.payload["name"] == "a1":
            raise RetryLater("later", delay=HOUR)

    worker = make_worker(sessions)
    worker.register("test", handler)
    await add(sessions, ("conv:A", "a1", "a1"), ("conv:A", "a2", "a2"))
    async with running(worker):
        await worker.drain(timeout=3)
    assert (await row_by_name(sessions, "a2")).status == "pending"


# -- jobs handed over by the transaction that queues them (hot.LeaseOffer) -------------------


def _queue(offer: hot.LeaseOffer | None, *jobs: tuple[str, str, str]) -> Callable[[Any], None]:
    def queue(conn: Any) -> None:
        for key, name, idem in jobs:
            hot.enqueue(conn, "test", key, {"name": name}, idem, offer=offer, context=name)

    return queue


async def test_handover_starts_a_new_job_straight_from_its_transaction(sessions: Sessions) -> None:
    seen: list[tuple[str, Any]] = []

    async def handler(job: Job) -> None:
        seen.append((job.payload["name"], job.context))

    # Polls a minute apart: nothing but the hand-over can start the job within the test.
    worker = make_worker(sessions, poll_seconds=60)
    worker.register("test", handler)
    db = database_of(sessions)
    async with running(worker):
        await asyncio.sleep(0)  # the worker's first (empty) claim
        async with worker.handover(db) as offer:
            await db.write(_queue(offer, ("conv:1", "alice", "i-a")))
            assert offer is not None and len(offer.taken) == 1 and offer.missed == []
            async with sessions() as s:
                row = (await s.scalars(select(OutboxItem))).one()
            assert row.leased_by == "worker-a" and row.leased_until is not None
            assert seen == []  # not before the block ends (the transaction committed)
        await worker.drain()
    # The context travelled with the job: it was not claimed (claimed jobs carry none).
    assert seen == [("alice", "alice")]
    async with sessions() as s:
        assert list(await s.scalars(select(OutboxItem.status))) == ["done"]


async def test_handover_leaves_later_jobs_of_a_key_in_order(sessions: Sessions) -> None:
    seen: list[tuple[str, Any]] = []

    async def handler(job: Job) -> None:
        seen.append((job.payload["name"], job.context))

    worker = make_worker(sessions)
    worker.register("test", handler)
    db = database_of(sessions)
    async with running(worker):
        async with worker.handover(db) as offer:
            await db.write(_queue(offer, ("conv:1", "first", "i-1"), ("conv:1", "second", "i-2")))
        assert offer is not None and len(offer.taken) == 1 and offer.missed == ["conv:1"]
        await worker.drain()
    assert seen == [("first", "first"), ("second", None)]


async def test_a_failed_handover_block_starts_nothing(sessions: Sessions) -> None:
    worker, seen = recording_worker(sessions, poll_seconds=60)
    db = database_of(sessions)

    def queue_then_fail(conn: Any) -> None:
        _queue(offer, ("conv:1", "alice", "i-a"))(conn)
        raise RuntimeError("disk full")

    async with running(worker):
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            async with worker.handover(db) as offer:
                await db.write(queue_then_fail)  # rolled back
        await asyncio.sleep(0.05)
    assert seen == []
    async with sessions() as s:
        assert list(await s.scalars(select(OutboxItem))) == []


async def test_a_burst_of_handovers_starts_together(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs handed over while other stores of the burst still run wait for them, so the
    burst reaches Synapse together."""
    monkeypatch.setattr(outbox, "BURST_WAIT", 60.0)  # only the burst's end opens the gate
    worker, started = recording_worker(sessions, poll_seconds=60)
    db = database_of(sessions)
    second_may_store = asyncio.Event()

    async def store(name: str, wait: asyncio.Event | None) -> None:
        async with worker.handover(db) as offer:
            if wait is not None:
                await wait.wait()
            await db.write(_queue(offer, (f"conv:{name}", name, f"i-{name}")))

    async with running(worker):
        await asyncio.sleep(0)
        second = asyncio.create_task(store("second", second_may_store))
        await asyncio.sleep(0)
        await store("first", None)  # committed while "second" is still storing
        for _ in range(20):
            await asyncio.sleep(0)
        assert started == []  # held for the rest of the burst
        second_may_store.set()
        await second
        await worker.drain()
    assert sorted(started) == ["first", "second"]


async def test_a_taken_job_never_started_runs_once_its_lease_ends(sessions: Sessions) -> None:
    """The process that queued it died between commit and hand-over: the lease expires
    (or is released at the next start) and any worker claims it."""
    crashed = make_worker(sessions, worker_id="worker-gone")
    db = database_of(sessions)
    offer = hot.LeaseOffer(crashed.worker_id, 600, set(), 4)  # what handover() would give
    await db.write(_queue(offer, ("conv:1", "alice", "i-a")))
    assert offer.taken
    worker, seen = recording_worker(sessions)
    async with running(worker):
        await worker.drain()
        assert seen == []  # still leased to the process that died
        async with sessions.begin() as s:
            await s.execute(update(OutboxItem).values(leased_until=utcnow() - timedelta(1)))
        worker.wake()
        await worker.drain()
    assert seen == ["alice"]


async def test_the_next_job_of_a_key_comes_with_its_preload(sessions: Sessions) -> None:
    seen: list[tuple[str, Any]] = []

    async def handler(job: Job) -> None:
        seen.append((job.payload["name"], job.context))

    def preload(conn: Any, payload: dict[str, Any]) -> str:
        assert conn is not None  # runs inside the finishing transaction
        return "preloaded " + payload["name"]

    worker = make_worker(sessions)
    worker.register("test", handler, preload=preload)
    await add(sessions, ("conv:1", "first", "i-1"), ("conv:1", "second", "i-2"))
    async with running(worker):
        await worker.drain()
    # The first job was claimed (no context); the second was leased when the first finished.
    assert seen == [("first", None), ("second", "preloaded second")]


async def test_the_next_message_of_a_busy_conversation_needs_no_claim(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
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

    worker = make_worker(sessions, poll_seconds=60)
    worker.register("test", handler)
    db = database_of(sessions)
    claims = 0
    claim = worker._claim

    async def counting(limit: int) -> list[Job]:
        nonlocal claims
        claims += 1
        return await claim(limit)

    async def started_up() -> bool:
        return claims > 0

    monkeypatch.setattr(worker, "_claim", counting)
    async with running(worker):
        # The worker's first (empty) claim at start is behind us; it waits for a wake now.
        await eventually(started_up)
        await worker.drain()
        claims = 0
        async with worker.handover(db) as offer:
            await db.write(_queue(offer, ("conv:1", "first", "i-1")))
        await asyncio.wait_for(started.wait(), 10)
        async with worker.handover(db) as offer:
            await db.write(_queue(offer, ("conv:1", "second", "i-2")))
        assert offer is not None and offer.missed == ["conv:1"]
        release.set()
        await asyncio.wait_for(done.wait(), 10)
        assert claims == 0
        await worker.drain()
    assert seen == ["first", "second"]
