"""Locks one hub process holds for as long as it runs, against the other processes of its
database: a PostgreSQL session advisory lock on a connection of its own. The server ends it
when that connection ends, however the process ends (kill -9 closes its socket), so a lock
is never left behind by a dead process. On SQLite there is one process per database file:
every lock is granted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
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

    async def keep(self, on_lost: Callable[[], None], every: float = 30) -> None:
        """Run while the lock matters: a connection that ends (the server restarted, a
        network cut) ends the lock with it, and another process may take it. Checked every
        `every` seconds: taken again if it is free, else `on_lost` (the holder must stop)."""
        key = lock_key(self.name)
        while self._conn is not None:
            await asyncio.sleep(every)
            conn = self._conn
            if conn is None:
                return
            try:
                held = (
                    await asyncio.wait_for(
                        conn.execute(
                            text(
                                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                "AND pid = pg_backend_pid() AND granted AND objsubid = 1 "
                                "AND classid = CAST(:c AS oid) AND objid = CAST(:o AS oid)"
                            ),
                            {"c": (key >> 32) & 0xFFFFFFFF, "o": key & 0xFFFFFFFF},
                        ),
                        10,
                    )
                ).scalar()
                await conn.commit()
                if held:
                    continue
            except Exception as exc:
                log.warning("locks: the connection holding %s failed (%s)", self.name, exc)
            self._conn = None
            with contextlib.suppress(Exception):
                await conn.close()
            if await self.try_acquire():
                log.warning("locks: %s was lost with its connection and is held again", self.name)
                continue
            log.critical("locks: %s is held by another process now; this one must stop", self.name)
            on_lost()
            return

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
