"""The homeserver's transactions, stored before they are acknowledged: each event becomes a
job of the one queue (hub.db.jobs), so Matrix events get the same retry and ordering as
everything else.

Events are deduplicated by their own ids (the jobs' idempotency keys), never by the
transaction id: Synapse on SQLite numbers its appservice transactions from 1 again after a
restart on the same database (element-hq/synapse#14556), so a txnId seen before can carry
events never seen. The txnId is remembered only to tell a homeserver's retry from such a
reuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.db.jobs import enqueue
from hub.db.models import InboxTransaction, table, utcnow
from hub.db.statements import run, statement
from hub.db.upsert import dialect_insert

if TYPE_CHECKING:
    from hub.db.database import Tx

IT = table(InboxTransaction)
QueuedJob = tuple[str, str, dict[str, Any], str]  # kind, ordering key, payload, idempotency key


@dataclass(frozen=True)
class StoredTransaction:
    repeated: bool  # the txnId had been stored before (a retry, or a reused number)
    queued: int  # jobs queued: events and receipts not stored before


@statement(insert=True)
def _insert_txn(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    return insert(IT).on_conflict_do_nothing(index_elements=["txn_id"]).returning(IT.c.txn_id)


def store_transaction(tx: Tx, txn_id: str, jobs: list[QueuedJob]) -> StoredTransaction:
    """Remember a homeserver transaction and queue each of its jobs that is not queued yet
    (by its idempotency key: an event's id), whether or not the txnId is new."""
    fresh = run(tx, _insert_txn, {"txn_id": txn_id, "received_at": utcnow()}).scalar()
    queued = sum(enqueue(tx, *job) is not None for job in jobs)
    return StoredTransaction(repeated=fresh is None, queued=queued)
