"""Locks one hub process holds for as long as it runs, against the other processes of its
database: a PostgreSQL session advisory lock on a connection of its own. The server ends it
when that connection ends, however the process ends (kill -9 closes its socket), so a lock
is never left behind by a dead process. On SQLite there is one process per database file:
every lock is granted.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection

    from hub.db.database import Database

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (advisory locks are numbered)."""
    return int.from_bytes(hashlib.sha256(f"hub:{name}".encode()).digest()[:8], "big", signed=True)


def one_at_a_time(conn: Connection, name: str) -> None:
    """Within a transaction: the same `name`d work of another hub process waits until this
    transaction ends (PostgreSQL; an SQLite file has one writer at a time anyway)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})


class ProcessLock:
    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name
        self._conn: AsyncConnection | None = None

    async def try_acquire(self) -> bool:
        """True when this process now holds the lock; False when another one does."""
        if self.db.is_sqlite or self._conn is not None:
            return True
        conn = await self.db.engine.connect()
        try:
            got = (
                await conn.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self.name)}
                )
            ).scalar()
            # Outside a transaction: the connection must not sit "idle in transaction".
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.name)}
                )
                await conn.commit()
            except Exception:
                log.warning("locks: releasing %s failed; it ends with the connection", self.name)
            finally:
                await conn.close()
