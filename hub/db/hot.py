"""Hot-path repository functions: SQLAlchemy Core on a synchronous `Connection`.

Run them through `hub.db.database.Database.write/read` (one transaction, one thread hop on
SQLite) or from an ORM session with `AsyncSession.run_sync`. Statements are built once per
dialect and executed with parameters; rows come back as transient model objects (not in any
session) where callers expect models.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, exists, func, or_, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.engine.interfaces import Compiled
from sqlalchemy.exc import MultipleResultsFound, NoResultFound
from sqlalchemy.orm import configure_mappers
from sqlalchemy.sql import Executable

from hub.db.models import (
    ChannelIdentity,
    Conversation,
    Customer,
    InboxTransaction,
    MediaFile,
    Message,
    OutboxItem,
    WebchatVisitor,
    utcnow,
)
from hub.db.upsert import dialect_insert

CU = Customer.__table__
CI = ChannelIdentity.__table__
CV = Conversation.__table__
M = Message.__table__
O = OutboxItem.__table__  # noqa: E741
IT = InboxTransaction.__table__
WV = WebchatVisitor.__table__
MF = MediaFile.__table__


@functools.cache
def _stmt(name: str, dialect: str) -> Executable:
    """Statement `name` for a dialect, built once."""
    ins = dialect_insert(dialect)
    if name == "identity_conversation":
        # Whole rows: a message's delivery job can then be handed to the worker with them.
        return (
            select(CI, CV)
            .outerjoin(CV, CV.c.identity_id == CI.c.id)
            .where(CI.c.channel == bindparam("channel"), CI.c.external_id == bindparam("ext"))
        )
    if name == "insert_customer":
        return CU.insert().returning(CU.c.id)
    if name == "insert_identity":
        return (
            ins(CI)
            .on_conflict_do_nothing(index_elements=["channel", "external_id"])
            .returning(CI.c.id)
        )
    if name == "delete_customer":
        return CU.delete().where(CU.c.id == bindparam("cid"))
    if name == "identity_id":
        return select(CI.c.id).where(
            CI.c.channel == bindparam("channel"), CI.c.external_id == bindparam("ext")
        )
    if name == "set_identity_name":
        return update(CI).where(CI.c.id == bindparam("iid")).values(display_name=bindparam("n"))
    if name == "insert_conversation":
        return ins(CV).on_conflict_do_nothing(index_elements=["identity_id"])
    if name == "conversation_by_identity":
        return select(CV.c.id, CV.c.last_inbound_at).where(CV.c.identity_id == bindparam("iid"))
    if name == "message_id_by_remote":
        return select(M.c.id).where(
            M.c.channel == bindparam("channel"), M.c.remote_id == bindparam("rid")
        )
    if name == "insert_message_dedupe":
        return (
            ins(M).on_conflict_do_nothing(index_elements=["channel", "remote_id"]).returning(M.c.id)
        )
    if name == "insert_message":
        return M.insert().returning(M.c.id)
    if name == "message_by_remote":
        return select(M).where(
            M.c.channel == bindparam("channel"), M.c.remote_id == bindparam("rid")
        )
    if name == "set_last_inbound":
        return update(CV).where(CV.c.id == bindparam("cid")).values(last_inbound_at=bindparam("at"))
    if name == "enqueue":
        return ins(O).on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(O.c.id)
    if name == "visitor_name":
        return select(WV.c.name).where(WV.c.visitor_id == bindparam("vid"))
    if name == "visitor_by_token_hash":
        return select(WV.c.visitor_id, WV.c.name).where(WV.c.token_hash == bindparam("th"))
    if name == "insert_txn":
        return ins(IT).on_conflict_do_nothing(index_elements=["txn_id"]).returning(IT.c.txn_id)
    if name == "delivery":
        return (
            select(M, CV, CI)
            .join(CV, CV.c.id == M.c.conversation_id)
            .join(CI, CI.c.id == CV.c.identity_id)
            .where(M.c.id == bindparam("mid"))
        )
    if name == "message_by_id":
        return select(M).where(M.c.id == bindparam("mid"))
    if name == "set_ghost_profile_name":
        return (
            update(CI).where(CI.c.id == bindparam("iid")).values(ghost_profile_name=bindparam("n"))
        )
    if name == "delivered":
        return (
            update(M)
            .where(M.c.id == bindparam("mid"))
            .values(matrix_event_id=bindparam("eid"), status="delivered")
        )
    if name == "delivered_media":
        return (
            update(M)
            .where(M.c.id == bindparam("mid"))
            .values(
                matrix_event_id=bindparam("eid"),
                status="delivered",
                media=bindparam("media", type_=M.c.media.type),
            )
        )
    if name == "set_media_mxc":
        return update(MF).where(MF.c.id == bindparam("fid")).values(mxc_uri=bindparam("mxc"))
    # -- the outbox --
    lease_free = or_(O.c.leased_until.is_(None), O.c.leased_until < bindparam("now"))
    if name == "claimable":
        earlier = O.alias("earlier")
        head_of_key = ~exists().where(
            and_(
                earlier.c.ordering_key == O.c.ordering_key,
                earlier.c.status == "pending",
                earlier.c.id < O.c.id,
            )
        )
        return (
            select(O.c.id, O.c.kind, O.c.ordering_key, O.c.payload, O.c.attempts)
            .where(O.c.status == "pending", O.c.next_attempt_at <= bindparam("now"))
            .where(lease_free, head_of_key)
            .order_by(O.c.id)
            .limit(bindparam("n"))
        )
    if name == "lease":
        return (
            update(O)
            .where(O.c.id.in_(bindparam("ids", expanding=True)), O.c.status == "pending")
            .where(lease_free)
            .values(leased_until=bindparam("until"), leased_by=bindparam("worker"))
            .returning(O.c.id)
        )
    if name == "lease_one":
        return (
            update(O)
            .where(O.c.id == bindparam("jid"), O.c.status == "pending")
            .where(lease_free)
            .values(leased_until=bindparam("until"), leased_by=bindparam("worker"))
            .returning(O.c.id)
        )
    if name == "head_of_key":
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
    if name == "done":
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
    if name == "pending_of_key":
        return select(func.count()).where(
            O.c.ordering_key == bindparam("key"), O.c.status == "pending"
        )
    raise KeyError(name)


# Statements whose column list follows the parameters given (compiled per key set).
_INSERTS = frozenset(
    {
        "insert_customer",
        "insert_identity",
        "insert_conversation",
        "insert_message_dedupe",
        "insert_message",
        "enqueue",
        "insert_txn",
    }
)
Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Prepared:
    """A statement compiled once for a SQLite dialect, with its type conversions."""

    compiled: Compiled
    binds: tuple[Processor, ...]  # by position
    results: tuple[Processor, ...]  # by result column


@functools.cache
def _prepared(name: str, keys: tuple[str, ...], dialect: Dialect) -> _Prepared | None:
    stmt: Any = _stmt(name, dialect.name)
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys else None)
    if compiled.prefetch or any(b.expanding for b in compiled.binds.values()):
        return None  # Python-side defaults or IN lists: SQLAlchemy's own execution
    assert compiled.positiontup is not None
    binds = tuple(
        compiled.binds[k].type.dialect_impl(dialect).bind_processor(dialect)
        for k in compiled.positiontup
    )
    results = tuple(
        c.type.dialect_impl(dialect).result_processor(dialect, None) for c in stmt.exported_columns
    )
    return _Prepared(compiled, binds, results)


class _Rows:
    """The part of SQLAlchemy's Result the functions below use, over fetched rows."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self.rows, self.rowcount = rows, rowcount

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def one(self) -> tuple[Any, ...]:
        if len(self.rows) != 1:
            raise NoResultFound() if not self.rows else MultipleResultsFound()
        return self.rows[0]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def all(self) -> list[tuple[Any, ...]]:
        return self.rows

    def scalars(self) -> list[Any]:
        return [r[0] for r in self.rows]


def _x(conn: Connection, name: str, params: Any = None) -> Any:
    """Execute statement `name`. On SQLite's thread the statement, compiled once, goes
    straight to the pysqlite connection (inside the transaction SQLAlchemy began):
    SQLAlchemy's per-execution machinery cost more than the statement itself on the hot
    path (bench/relay.py)."""
    dialect = conn.dialect
    if dialect.driver == "pysqlite":  # the SQLite thread of hub.db.database
        keys = tuple(params) if name in _INSERTS else ()
        prep = _prepared(name, keys, dialect)
        if prep is not None:
            compiled = prep.compiled
            values = compiled.construct_params(params)
            args = [
                v if proc is None else proc(v)
                for v, proc in zip(
                    [values[k] for k in compiled.positiontup],  # type: ignore[union-attr]
                    prep.binds,
                    strict=True,
                )
            ]
            cur = conn.connection.driver_connection.execute(compiled.string, args)  # type: ignore[union-attr]
            rows = cur.fetchall()
            procs = prep.results
            if rows and any(procs):
                rows = [
                    tuple(v if p is None else p(v) for v, p in zip(r, procs, strict=True))
                    for r in rows
                ]
            return _Rows(rows, cur.rowcount)
    return conn.execute(_stmt(name, dialect.name), params)


ModelT = TypeVar("ModelT")
_mappers_ready = False


def _model(cls: type[ModelT], values: Mapping[str, Any]) -> ModelT:
    """A transient model object holding a row, built the way the ORM loads one (no
    instrumented __init__, ~15x cheaper); assigning attributes afterwards works as usual."""
    global _mappers_ready
    if not _mappers_ready:  # the models must be set up before new_instance
        configure_mappers()
        _mappers_ready = True
    obj: ModelT = cls.__mapper__.class_manager.new_instance()  # type: ignore[attr-defined]
    obj.__dict__.update(values)
    return obj


# -- customers, conversations, messages ------------------------------------------------------


@dataclass
class IdentityConversation:
    identity_id: int
    display_name: str | None
    conversation_id: int
    last_inbound_at: datetime | None
    # Both rows as they are after this transaction, when they existed before it (transient).
    rows: tuple[ChannelIdentity, Conversation] | None = None


def _split(row: Any, *tables: Any) -> list[dict[str, Any]]:
    """A joined row's columns per table (in select order)."""
    values, out, at = tuple(row), [], 0
    for table in tables:
        keys = table.columns.keys()
        out.append(dict(zip(keys, values[at : at + len(keys)], strict=True)))
        at += len(keys)
    if at != len(values):
        raise ValueError(f"row of {len(values)} columns, tables of {at}")
    return out


def identity_conversation(
    conn: Connection,
    channel: str,
    external_id: str,
    display_name: str | None,
    ghost_localpart: Callable[[], str],
) -> IdentityConversation:
    """Get or create a channel identity (with its customer) and its conversation; a given
    display name replaces a different known one (None never erases). Safe against another
    process creating them at the same time (INSERT ... ON CONFLICT DO NOTHING)."""
    p = {"channel": channel, "ext": external_id}
    row = _x(conn, "identity_conversation", p).first()
    ci: dict[str, Any] | None = None
    cv: dict[str, Any] | None = None
    if row is None:
        identity_id = _create_identity(conn, channel, external_id, display_name, ghost_localpart())
        known_name, conversation_id, last = display_name, None, None
    else:
        ci, cv = _split(row, CI, CV)
        identity_id, known_name, conversation_id, last = (
            ci["id"],
            ci["display_name"],
            cv["id"],
            cv["last_inbound_at"],
        )
    if display_name and known_name != display_name:
        _x(conn, "set_identity_name", {"iid": identity_id, "n": display_name})
        known_name = display_name
        if ci is not None:
            ci["display_name"] = display_name
    if conversation_id is None:
        _x(conn, "insert_conversation", {"identity_id": identity_id, "created_at": utcnow()})
        conversation_id, last = _x(conn, "conversation_by_identity", {"iid": identity_id}).one()
        return IdentityConversation(identity_id, known_name, conversation_id, last)
    assert ci is not None and cv is not None
    rows = (_model(ChannelIdentity, ci), _model(Conversation, cv))
    return IdentityConversation(identity_id, known_name, conversation_id, last, rows)


def _create_identity(
    conn: Connection, channel: str, external_id: str, name: str | None, ghost_localpart: str
) -> int:
    now = utcnow()
    customer_id = _x(conn, "insert_customer", {"display_name": name, "created_at": now}).scalar()
    inserted = _x(
        conn,
        "insert_identity",
        {
            "customer_id": customer_id,
            "channel": channel,
            "external_id": external_id,
            "display_name": name,
            "ghost_localpart": ghost_localpart,
            "created_at": now,
        },
    ).scalar()
    if inserted is not None:
        return int(inserted)
    # Another process created it first.
    _x(conn, "delete_customer", {"cid": customer_id})
    return int(_x(conn, "identity_id", {"channel": channel, "ext": external_id}).scalar_one())


def message_id_by_remote(conn: Connection, channel: str, remote_id: str) -> int | None:
    found = _x(conn, "message_id_by_remote", {"channel": channel, "rid": remote_id}).scalar()
    return int(found) if found is not None else None


def message_by_remote(conn: Connection, channel: str, remote_id: str) -> Message | None:
    row = _x(conn, "message_by_remote", {"channel": channel, "rid": remote_id}).first()
    return _model(Message, _split(row, M)[0]) if row is not None else None


def insert_message(conn: Connection, values: dict[str, Any]) -> Message | None:
    """Insert a message; None when its (channel, remote_id) is known already. Returns a
    transient Message with every column set."""
    full = {c.name: None for c in M.columns if c.name != "id"}
    full |= {"created_at": utcnow(), "status": "pending", **values}
    name = "insert_message_dedupe" if full.get("remote_id") else "insert_message"
    new_id = _x(conn, name, full).scalar()
    if new_id is None:
        return None
    full["id"] = new_id
    return _model(Message, full)


def set_last_inbound(conn: Connection, conversation_id: int, at: datetime) -> None:
    _x(conn, "set_last_inbound", {"cid": conversation_id, "at": at})


def visitor_name(conn: Connection, visitor_id: str) -> tuple[bool, str | None]:
    """(exists, name) of a web-chat visitor."""
    row = _x(conn, "visitor_name", {"vid": visitor_id}).first()
    return (False, None) if row is None else (True, row[0])


def visitor_by_token_hash(conn: Connection, token_hash: str) -> tuple[str, str | None] | None:
    """(visitor_id, name) of the visitor holding a token."""
    row = _x(conn, "visitor_by_token_hash", {"th": token_hash}).first()
    return None if row is None else (row[0], row[1])


# -- the outbox --------------------------------------------------------------------------------


def job_row(
    kind: str,
    ordering_key: str,
    payload: dict[str, Any],
    idempotency_key: str,
    delay: float = 0,
) -> dict[str, Any]:
    """The outbox row of a new job (both enqueue paths insert exactly this)."""
    now = utcnow()
    return {
        "kind": kind,
        "ordering_key": ordering_key,
        "payload": payload,
        "idempotency_key": idempotency_key,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now + timedelta(seconds=delay) if delay else now,
        "leased_until": None,
        "leased_by": None,
        "last_error": None,
        "created_at": now,
        "done_at": None,
    }


JobRow = tuple[int, str, str, dict[str, Any], int]  # id, kind, ordering_key, payload, attempts


@dataclass
class LeaseOffer:
    """A worker's offer to take new jobs straight from the transaction that queues them:
    `enqueue` leases a job to the worker when it is the only pending one of its ordering key,
    and lists it in `taken` (with what its handler would otherwise read back) for the worker
    to start once the transaction committed. That saves the worker a claim transaction per
    job. Only where writers are serialised (SQLite: BEGIN IMMEDIATE), which makes "no other
    pending job of this key" a fact until commit; on PostgreSQL jobs are claimed."""

    worker_id: str
    seconds: float
    busy: set[str]  # ordering keys the worker runs now (or took in this transaction)
    room: int  # free slots of the worker
    taken: list[tuple[JobRow, Any]] = field(default_factory=list)
    # Ordering keys of jobs queued but not taken: the worker must claim them (or, for a key
    # it runs now, see to them once that chain ends).
    missed: list[str] = field(default_factory=list)


def enqueue(
    conn: Connection,
    kind: str,
    ordering_key: str,
    payload: dict[str, Any],
    idempotency_key: str,
    *,
    delay: float = 0,
    offer: LeaseOffer | None = None,
    context: Any = None,
) -> int | None:
    """Add a job in the caller's transaction; its id, None for a known idempotency key.
    With an `offer`, a job due now that no other job of its key waits before is leased to
    that worker (see LeaseOffer); `context` travels with it to the handler."""
    row = job_row(kind, ordering_key, payload, idempotency_key, delay)
    taker = (
        offer
        if offer is not None
        and not delay
        and offer.room > 0
        and ordering_key not in offer.busy
        and not has_pending(conn, ordering_key)
        else None
    )
    if taker is not None:
        row["leased_until"] = row["created_at"] + timedelta(seconds=taker.seconds)
        row["leased_by"] = taker.worker_id
    new_id = _x(conn, "enqueue", row).scalar()
    if new_id is None:
        return None
    if taker is not None:
        taker.taken.append(((int(new_id), kind, ordering_key, payload, 0), context))
        taker.busy.add(ordering_key)
        taker.room -= 1
    elif offer is not None:
        offer.missed.append(ordering_key)
    return int(new_id)


def claim(
    conn: Connection,
    worker_id: str,
    limit: int,
    busy_keys: frozenset[str],
    lease_seconds: float,
) -> list[JobRow]:
    """Lease up to `limit` due jobs, each the oldest pending one of its ordering key and of
    no key in `busy_keys`. The lease is a conditional UPDATE, so of several processes
    selecting the same job only one gets it."""
    now = utcnow()
    rows = _x(conn, "claimable", {"now": now, "n": limit + len(busy_keys)}).all()
    wanted = [r for r in rows if r[2] not in busy_keys][:limit]
    if not wanted:
        return []
    got = set(
        _x(
            conn,
            "lease",
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
    conn: Connection,
    job_id: int,
    attempts: int,
    ordering_key: str,
    chain: tuple[str, float] | None,
) -> JobRow | None:
    """Mark a job done. With `chain` (worker id, lease seconds), lease the next job of the
    same ordering key if it is due and free, and return it: the worker runs it right away."""
    now = utcnow()
    _x(conn, "done", {"jid": job_id, "attempts": attempts, "at": now})
    if chain is None:
        return None
    nxt = _x(conn, "head_of_key", {"key": ordering_key}).first()
    if nxt is None or nxt[5] > now or (nxt[6] is not None and nxt[6] >= now):
        return None
    got = _x(
        conn,
        "lease_one",
        {
            "jid": nxt[0],
            "now": now,
            "until": now + timedelta(seconds=chain[1]),
            "worker": chain[0],
        },
    ).scalar()
    return (nxt[0], nxt[1], nxt[2], nxt[3], nxt[4]) if got is not None else None


def update_job(conn: Connection, job_id: int, values: dict[str, Any]) -> None:
    conn.execute(update(O).where(O.c.id == job_id).values(**values))


def has_pending(conn: Connection, ordering_key: str) -> bool:
    return bool(_x(conn, "pending_of_key", {"key": ordering_key}).scalar())


# -- Matrix delivery ---------------------------------------------------------------------------


@dataclass
class Delivery:
    message: Message
    conversation: Conversation
    identity: ChannelIdentity
    target: Message | None


def delivery(conn: Connection, message_id: int) -> Delivery | None:
    """A message to put into Matrix with its conversation, identity and reply target
    (transient objects)."""
    row = _x(conn, "delivery", {"mid": message_id}).first()
    if row is None:
        return None
    m, cv, ci = _split(row, M, CV, CI)
    message = _model(Message, m)
    conversation, identity = _model(Conversation, cv), _model(ChannelIdentity, ci)
    target = None
    if message.reply_to_message_id:
        t = _x(conn, "message_by_id", {"mid": message.reply_to_message_id}).first()
        target = _model(Message, _split(t, M)[0]) if t is not None else None
    return Delivery(message, conversation, identity, target)


def mark_delivered(
    conn: Connection,
    message_id: int,
    event_id: str,
    media: dict[str, Any] | None = None,
    media_id: str | None = None,
    mxc: str | None = None,
) -> None:
    """The message reached Matrix as `event_id` (with its media now stored and uploaded)."""
    if media is None:
        _x(conn, "delivered", {"mid": message_id, "eid": event_id})
    else:
        _x(conn, "delivered_media", {"mid": message_id, "eid": event_id, "media": media})
    if media_id and mxc:
        _x(conn, "set_media_mxc", {"fid": media_id, "mxc": mxc})


def set_ghost_profile_name(conn: Connection, identity_id: int, name: str) -> None:
    _x(conn, "set_ghost_profile_name", {"iid": identity_id, "n": name})


# -- appservice transactions -------------------------------------------------------------------

QueuedJob = tuple[str, str, dict[str, Any], str]  # kind, ordering_key, payload, idempotency key


def store_transaction(conn: Connection, txn_id: str, jobs: list[QueuedJob]) -> int | None:
    """Remember a homeserver transaction and queue its jobs; None if it was seen before,
    else the number of jobs queued (events already known are not queued twice)."""
    fresh = _x(conn, "insert_txn", {"txn_id": txn_id, "received_at": utcnow()}).scalar()
    if fresh is None:
        return None
    return sum(enqueue(conn, *job) is not None for job in jobs)


def lease_holders(conn: Connection, prefix: str) -> list[str]:
    """Workers whose id starts with `prefix` holding a lease on a pending job now."""
    rows = conn.execute(
        select(O.c.leased_by)
        .distinct()
        .where(
            O.c.status == "pending",
            O.c.leased_by.startswith(prefix, autoescape=True),
            O.c.leased_until >= utcnow(),
        )
    )
    return [r[0] for r in rows]


def release_leases(conn: Connection, worker_ids: list[str]) -> int:
    """End the leases of workers known to be dead: their jobs are claimable at once."""
    result = conn.execute(
        update(O)
        .where(O.c.status == "pending", O.c.leased_by.in_(worker_ids))
        .values(leased_until=None)
    )
    return int(result.rowcount)
