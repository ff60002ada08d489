"""The homeserver's transactions, stored before they are acknowledged: each event becomes a
job of the one queue (hub.db.jobs), so Matrix events get the same retry and ordering as
everything else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.db.jobs import enqueue
from hub.db.models import InboxTransaction, table, utcnow
from hub.db.statements import run, statement
from hub.db.upsert import dialect_insert

if TYPE_CHECKING:
    from hub.db.database import Tx

IT = table(InboxTransaction)
QueuedJob = tuple[str, str, dict[str, Any], str]  # kind, ordering key, payload, idempotency key


@statement(insert=True)
def _insert_txn(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    return insert(IT).on_conflict_do_nothing(index_elements=["txn_id"]).returning(IT.c.txn_id)


def store_transaction(tx: Tx, txn_id: str, jobs: list[QueuedJob]) -> int | None:
    """Remember a homeserver transaction and queue its jobs; None if it was seen before,
    else the number of jobs queued (events already known are not queued twice)."""
    fresh = run(tx, _insert_txn, {"txn_id": txn_id, "received_at": utcnow()}).scalar()
    if fresh is None:
        return None
    return sum(enqueue(tx, *job) is not None for job in jobs)
