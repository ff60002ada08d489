"""The job queue: one table (`outbox`) for everything that must happen, in both directions.

The rules, all kept here:
- **Enqueue in the cause's transaction.** `enqueue(tx, kind, key, payload, idempotency)` adds
  a row in the same transaction as the state change that causes it: both happen or neither.
- **Idempotency per kind.** The stored key is "<kind>/<idempotency key>"; a second enqueue
  with the same pair adds nothing. Two kinds can never collide.
- **Order per ordering key.** Jobs sharing an ordering key (a conversation, a room) run
  strictly one after another in id order: only the oldest pending job of a key is claimable,
  so a retry never reorders a chat.
- **Leases.** `claim` leases due jobs to a worker with a conditional UPDATE (of several
  processes selecting the same job only one gets it; on PostgreSQL the read skips rows
  another process's claim has locked, `FOR UPDATE SKIP LOCKED`); a lease that runs out makes
  the job claimable again, so a dead process loses nothing.
- **Complete or fail.** `complete` marks a job done in the transaction that also applies the
  handler's writes, and may lease the next job of the same key to the same worker (`chain`:
  a busy conversation needs no claim per message). `fail` records an attempt: retry later,
  or dead-letter.
- **Hand-over.** Where writers are serialised (an SQLite file), a write may lease the jobs
  it queues to the worker directly (`LeaseOffer`, see hub.jobs.handover).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, delete, exists, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable, Select

from hub.db.models import InboxTransaction, OutboxItem, table, utcnow
from hub.db.statements import run, statement
from hub.db.upsert import dialect_insert

if TYPE_CHECKING:
    from hub.db.database import Tx

O = table(OutboxItem)  # noqa: E741
JobRow = tuple[int, str, str, dict[str, Any], int]  # id, kind, ordering_key, payload, attempts


def conversation_key(conversation_id: int) -> str:
    """Everything of one conversation (deliveries to Matrix, sends to the customer)."""
    return f"conv:{conversation_id}"


def room_key(room_id: str) -> str:
    """Events the homeserver pushed for one room, handled in order."""
    return f"room:{room_id}"


def room_out_key(room_id: str) -> str:
    """The bot's own events into one room (notices, reactions, state)."""
    return f"room-out:{room_id}"


def receipt_key(room_id: str) -> str:
    return f"receipt:{room_id}"


@dataclass
class LeaseOffer:
    """A worker's offer to take new jobs straight from the transaction that queues them:
    `enqueue` leases a job to the worker when it is due now and the only pending one of its
    key, and lists it in `taken` (with what its handler would otherwise read back) for the
    worker to start once the transaction committed."""

    worker_id: str
    seconds: float
    busy: set[str]  # ordering keys the worker runs now (or took in this transaction)
    room: int  # free slots of the worker
    urgent: bool = False  # made for a write someone waits for (see hub.jobs.handover)
    # kind -> (connection, payload) -> what its handler reads first: read for a job taken
    # without a context, in the transaction that queues it (one read transaction less).
    preloads: Mapping[str, Callable[[Connection, dict[str, Any]], Any]] = field(
        default_factory=dict
    )
    taken: list[tuple[JobRow, Any]] = field(default_factory=list)
    # Keys of jobs queued but not taken: the worker claims them (or, for a key it runs now,
    # its chain sees to them).
    missed: list[str] = field(default_factory=list)

    def mark(self) -> tuple[int, int, frozenset[str], int]:
        """Where the offer stands, to go back to when what follows is rolled back."""
        return len(self.taken), len(self.missed), frozenset(self.busy), self.room

    def restore(self, mark: tuple[int, int, frozenset[str], int]) -> None:
        taken, missed, busy, room = mark
        del self.taken[taken:], self.missed[missed:]
        self.busy, self.room = set(busy), room


# -- statements ---------------------------------------------------------------------------


def _lease_free() -> Any:
    return or_(O.c.leased_until.is_(None), O.c.leased_until < bindparam("now"))


@statement(insert=True)
def _insert(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    return insert(O).on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(O.c.id)


@statement
def _pending_of_key(dialect: str) -> Executable:
    return select(func.count()).where(O.c.ordering_key == bindparam("key"), O.c.status == "pending")


def _head_of_key() -> Any:
    """No older pending job shares this job's ordering key."""
    earlier = O.alias("earlier")
    return ~exists().where(
        and_(
            earlier.c.ordering_key == O.c.ordering_key,
            earlier.c.status == "pending",
            earlier.c.id < O.c.id,
        )
    )


def _claimable_select() -> Select[Any]:
    return (
        select(O.c.id, O.c.kind, O.c.ordering_key, O.c.payload, O.c.attempts)
        .where(O.c.status == "pending", O.c.next_attempt_at <= bindparam("now"))
        .where(_lease_free(), _head_of_key())
        # The order of ix_outbox_due (status, next_attempt_at), ties by id: SQLite stops
        # after the first claimable rows instead of sorting every due job (bench/README.md,
        # "Growth": 4.5 → 0.02 ms a claim with 10 000 pending), and with statistics it no
        # longer walks the week's done jobs in id order. Order within a key is the
        # head-of-key rule's, not this.
        .order_by(O.c.next_attempt_at, O.c.id)
        .limit(bindparam("n"))
    )


@statement
def _claimable(dialect: str) -> Executable:
    return _claimable_select()


@statement
def _claim_candidates(dialect: str) -> Executable:
    """The claim's read. On PostgreSQL several hub processes claim at once: each locks the
    rows it reads and skips those another claim holds, so two processes never wait on (or
    fight over) the same jobs and each leases a disjoint share; the conditional UPDATE stays
    the guarantee. SQLite has no row locks and one writer at a time: plain SELECT there."""
    query = _claimable_select()
    if dialect == "postgresql":
        query = query.with_for_update(skip_locked=True, of=O)
    return query


@statement
def _lease(dialect: str) -> Executable:
    return (
        update(O)
        .where(O.c.id.in_(bindparam("ids", expanding=True)), O.c.status == "pending")
        .where(_lease_free())
        .values(leased_until=bindparam("until"), leased_by=bindparam("worker"))
        .returning(O.c.id)
    )


@statement
def _lease_one(dialect: str) -> Executable:
    return (
        update(O)
        .where(O.c.id == bindparam("jid"), O.c.status == "pending")
        .where(_lease_free())
        .values(leased_until=bindparam("until"), leased_by=bindparam("worker"))
        .returning(O.c.id)
    )


@statement
def _first_of_key(dialect: str) -> Executable:
    return (
        select(
            O.c.id,
            O.c.kind,
            O.c.ordering_key,
            O.c.payload,
            O.c.attempts,
            O.c.next_attempt_at,
            O.c.leased_until,
        )
        .where(O.c.ordering_key == bindparam("key"), O.c.status == "pending")
        .order_by(O.c.id)
        .limit(1)
    )


@statement
def _done(dialect: str) -> Executable:
    return (
        update(O)
        .where(O.c.id == bindparam("jid"))
        .values(
            status="done",
            attempts=bindparam("attempts"),
            done_at=bindparam("at"),
            leased_until=None,
            last_error=None,
        )
    )


# -- enqueue ------------------------------------------------------------------------------


def job_row(
    kind: str, ordering_key: str, payload: dict[str, Any], idempotency_key: str, delay: float = 0
) -> dict[str, Any]:
    """The row of a new job."""
    now = utcnow()
    return {
        "kind": kind,
        "ordering_key": ordering_key,
        "payload": payload,
        "idempotency_key": f"{kind}/{idempotency_key}",
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now + timedelta(seconds=delay) if delay else now,
        "leased_until": None,
        "leased_by": None,
        "last_error": None,
        "created_at": now,
        "done_at": None,
    }


def enqueue(
    tx: Tx,
    kind: str,
    ordering_key: str,
    payload: dict[str, Any],
    idempotency_key: str,
    *,
    delay: float = 0,
    context: Any = None,
) -> int | None:
    """Add a job in the unit of work's transaction; its id, None when this kind has a job
    with this idempotency key already. `context` travels with a job handed over to the
    worker (what its handler would otherwise read back)."""
    row = job_row(kind, ordering_key, payload, idempotency_key, delay)
    offer = tx.offer
    taker = (
        offer
        if offer is not None
        and not delay
        and offer.room > 0
        and ordering_key not in offer.busy
        and not run(tx, _pending_of_key, {"key": ordering_key}).scalar()
        else None
    )
    if taker is not None:
        row["leased_until"] = row["created_at"] + timedelta(seconds=taker.seconds)
        row["leased_by"] = taker.worker_id
    if tx.orm_active:
        tx.orm.flush()  # rows the ORM holds must exist before the job that refers to them
    new_id = run(tx, _insert, row).scalar()
    if new_id is None:
        return None
    tx.queued = True
    if taker is not None:
        preload = taker.preloads.get(kind) if context is None else None
        if preload is not None:
            context = preload(tx.conn, payload)
        taker.taken.append(((int(new_id), kind, ordering_key, payload, 0), context))
        taker.busy.add(ordering_key)
        taker.room -= 1
    elif offer is not None:
        offer.missed.append(ordering_key)
    return int(new_id)


# -- claim, complete, fail ----------------------------------------------------------------


def claim(
    tx: Tx, worker_id: str, limit: int, busy_keys: frozenset[str], lease_seconds: float
) -> list[JobRow]:
    """Lease up to `limit` due jobs, each the oldest pending one of its key and of no key
    in `busy_keys` (the worker runs those already)."""
    now = utcnow()
    rows = run(tx, _claim_candidates, {"now": now, "n": limit + len(busy_keys)}).all()
    wanted = [r for r in rows if r[2] not in busy_keys][:limit]
    if not wanted:
        return []
    got = set(
        run(
            tx,
            _lease,
            {
                "ids": [r[0] for r in wanted],
                "now": now,
                "until": now + timedelta(seconds=lease_seconds),
                "worker": worker_id,
            },
        ).scalars()
    )
    return [(r[0], r[1], r[2], r[3], r[4]) for r in wanted if r[0] in got]


def complete(
    tx: Tx, job_id: int, attempts: int, ordering_key: str, chain: tuple[str, float] | None
) -> JobRow | None:
    """Mark a job done. With `chain` (worker id, lease seconds), lease the next job of the
    same key if it is due and free, and return it: the worker runs it right away."""
    now = utcnow()
    run(tx, _done, {"jid": job_id, "attempts": attempts, "at": now})
    if chain is None:
        return None
    nxt = run(tx, _first_of_key, {"key": ordering_key}).first()
    if nxt is None or nxt[5] > now or (nxt[6] is not None and nxt[6] >= now):
        return None
    got = run(
        tx,
        _lease_one,
        {"jid": nxt[0], "now": now, "until": now + timedelta(seconds=chain[1]), "worker": chain[0]},
    ).scalar()
    return (nxt[0], nxt[1], nxt[2], nxt[3], nxt[4]) if got is not None else None


def extend_leases(tx: Tx, worker_id: str, job_ids: list[int], seconds: float) -> int:
    """Keep the leases of jobs this worker is still running: a job that outlives its lease
    would otherwise be claimed and run a second time by another process."""
    result = tx.conn.execute(
        update(O)
        .where(O.c.id.in_(job_ids), O.c.status == "pending", O.c.leased_by == worker_id)
        .values(leased_until=utcnow() + timedelta(seconds=seconds))
    )
    return int(result.rowcount)


def fail(
    tx: Tx, job_id: int, attempts: int, error: str, dead: bool, retry_at: datetime | None
) -> None:
    """Record a failed attempt: due again at `retry_at`, or dead (kept for a human)."""
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_error": error[:2000],
        "leased_until": None,
    }
    if dead:
        values |= {"status": "dead", "done_at": utcnow()}
    else:
        values["next_attempt_at"] = retry_at
    tx.conn.execute(update(O).where(O.c.id == job_id).values(**values))


def has_unstarted(tx: Tx, ordering_key: str) -> bool:
    """A job of this key is queued and has never been leased nor tried: one that will read
    the state afresh when it runs, so a caller may rely on it instead of queuing another.
    On PostgreSQL the row stays locked until the caller's transaction commits, so no other
    process leases it and runs it before the caller's change is visible."""
    query = (
        select(O.c.id)
        .where(O.c.ordering_key == ordering_key, O.c.status == "pending")
        # A failed one waiting for its retry would hold the others back.
        .where(O.c.leased_until.is_(None), O.c.attempts == 0)
        .limit(1)
    )
    if tx.conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return tx.conn.execute(query).first() is not None


def has_due(tx: Tx) -> bool:
    """A job some worker could claim now (not leased, first of its ordering key)."""
    now = utcnow()
    return bool(run(tx, _claimable, {"now": now, "n": 1}).first())


# -- housekeeping -------------------------------------------------------------------------


def purge(tx: Tx, done_days: int, dead_days: int) -> None:
    """Forget finished jobs after a while; dead ones stay longer for a human to look at."""
    now = utcnow()
    tx.conn.execute(
        delete(O).where(O.c.status == "done", O.c.done_at < now - timedelta(days=done_days))
    )
    tx.conn.execute(
        delete(O).where(O.c.status == "dead", O.c.done_at < now - timedelta(days=dead_days))
    )
    tx.conn.execute(
        delete(table(InboxTransaction)).where(
            InboxTransaction.received_at < now - timedelta(days=done_days)
        )
    )


def lease_holders(tx: Tx, prefix: str) -> list[str]:
    """Workers whose id starts with `prefix` holding a lease on a pending job now."""
    rows = tx.conn.execute(
        select(O.c.leased_by)
        .distinct()
        .where(
            O.c.status == "pending",
            O.c.leased_by.startswith(prefix, autoescape=True),
            O.c.leased_until >= utcnow(),
        )
    )
    return [r[0] for r in rows]


def release_leases(tx: Tx, worker_ids: list[str]) -> int:
    """End the leases of workers known to be dead: their jobs are claimable at once."""
    result = tx.conn.execute(
        update(O)
        .where(O.c.status == "pending", O.c.leased_by.in_(worker_ids))
        .values(leased_until=None)
    )
    return int(result.rowcount)


# -- monitoring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KindBacklog:
    """What one kind of job has waiting (pending: due, leased or backing off) and given up
    on (dead, kept DEAD_RETENTION_DAYS for a human)."""

    kind: str
    pending: int
    oldest_pending_seconds: float  # 0 when none is pending
    dead: int


def backlog(tx: Tx) -> list[KindBacklog]:
    """The queue by kind, for /metrics: one GROUP BY over the rows that are not done, which
    the (status, next_attempt_at) index narrows to the few waiting and dead ones, however
    many done rows the week holds. Ages are on the hub's clock, like `created_at`."""
    now = utcnow()
    rows = tx.conn.execute(
        select(O.c.kind, O.c.status, func.count(), func.min(O.c.created_at))
        .where(O.c.status.in_(("pending", "dead")))
        .group_by(O.c.kind, O.c.status)
    )
    pending: dict[str, tuple[int, float]] = {}
    dead: dict[str, int] = {}
    for kind, status, count, oldest in rows:
        if status == "pending":
            age = (now - oldest).total_seconds() if oldest is not None else 0.0
            pending[kind] = (int(count), max(0.0, age))
        else:
            dead[kind] = int(count)
    return [
        KindBacklog(kind, *pending.get(kind, (0, 0.0)), dead.get(kind, 0))
        for kind in sorted(pending.keys() | dead.keys())
    ]
