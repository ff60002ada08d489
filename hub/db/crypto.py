"""The bot device's end-to-bridge encryption state (table crypto_state), as units of work.

hub.matrix.crypto.store keeps the state in memory and writes what changed in one unit;
the values are opaque here (encrypted pickles or JSON made by that module), never logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select
from sqlalchemy.sql import Executable

from hub.db.models import CryptoState, table, utcnow
from hub.db.statements import statement
from hub.db.upsert import dialect_insert

if TYPE_CHECKING:
    from hub.db.database import Tx

CS = table(CryptoState)
RowKey = tuple[str, str]  # (namespace, key)


@statement
def _all_rows(dialect: str) -> Executable:
    return select(CS.c.namespace, CS.c.key, CS.c.value)


@statement
def _upsert(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    stmt = insert(CS)
    # Last writer wins: a value is the whole item, so an older copy is never worth keeping.
    return stmt.on_conflict_do_update(
        index_elements=["namespace", "key"],
        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
    )


@statement
def _delete(dialect: str) -> Executable:
    return CS.delete().where(CS.c.namespace == bindparam("ns"), CS.c.key == bindparam("k"))


def load_rows(tx: Tx) -> dict[RowKey, str]:
    """Every stored item: (namespace, key) -> value."""
    stmt = _all_rows.for_dialect(tx.conn.dialect.name)
    return {(ns, key): value for ns, key, value in tx.conn.execute(stmt)}


def apply_changes(tx: Tx, changes: dict[RowKey, str | None]) -> None:
    """Write items (insert or replace) and delete those whose value is None."""
    dialect = tx.conn.dialect.name
    now = utcnow()
    upserts = [
        {"namespace": ns, "key": key, "value": value, "updated_at": now}
        for (ns, key), value in changes.items()
        if value is not None
    ]
    deletes = [{"ns": ns, "k": key} for (ns, key), value in changes.items() if value is None]
    # executemany: one round trip per kind of change, however many items a flush carries
    # (a key query can change hundreds of devices at once).
    if upserts:
        tx.conn.execute(_upsert.for_dialect(dialect), upserts)
    if deletes:
        tx.conn.execute(_delete.for_dialect(dialect), deletes)
