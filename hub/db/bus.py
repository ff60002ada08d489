"""Messages to every hub process on one database: what one process learns that another must
act on (a widget's visitor may hold their websocket on another process than the one that
sent the adviser's answer).

`publish(topic, payload)` runs this process's handlers of the topic at once and, on
PostgreSQL, tells the other processes with `NOTIFY hub_bus`; each process LISTENs on one
connection of its own and runs its handlers for what the others published (its own
notifications come back too and are skipped by origin). A payload over NOTIFY's 8000 bytes
is kept in `bus_spill` and only its id is notified.

What is published is best effort, as the websocket frames it carries are: a process that is
not listening at that moment (restarting, its connection lost and not yet back) misses it,
and the widget reads what it missed from its history when it reconnects. Nothing that must
happen travels here: that is the job queue's (hub.db.jobs).

On SQLite there is one process per database file: only the local handlers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, insert, select, text

from hub.db.models import BusSpill, table, utcnow

if TYPE_CHECKING:
    from hub.db.database import Database, Tx

log = logging.getLogger(__name__)

CHANNEL = "hub_bus"
# NOTIFY takes up to 8000 bytes; JSON of the envelope and a margin for multi-byte text.
MAX_INLINE_BYTES = 7000
SPILL_KEEP = timedelta(minutes=10)  # far longer than any listener takes to read a spill
RECONNECT_DELAYS = (0.5, 1, 2, 5, 10)
WATCH_SECONDS = 30

Handler = Callable[[dict[str, Any]], Awaitable[None]]
S = table(BusSpill)


# -- units of work ----------------------------------------------------------------------------


def notify(tx: Tx, body: str) -> None:
    tx.conn.execute(text("SELECT pg_notify(:channel, :body)"), {"channel": CHANNEL, "body": body})


def spill(tx: Tx, topic: str, payload: dict[str, Any]) -> int:
    """Keep an oversize payload; forget ones nobody needs any more (spills are rare, so
    the clean-up rides along instead of being a timer)."""
    now = utcnow()
    tx.conn.execute(delete(S).where(S.c.created_at < now - SPILL_KEEP))
    spill_id = tx.conn.execute(
        insert(S).values(topic=topic, payload=payload, created_at=now).returning(S.c.id)
    ).scalar_one()
    return int(spill_id)


def spilled(tx: Tx, spill_id: int) -> dict[str, Any] | None:
    row = tx.conn.execute(select(S.c.payload).where(S.c.id == bindparam("sid")), {"sid": spill_id})
    found = row.scalar_one_or_none()
    return dict(found) if found is not None else None


# -- the bus ----------------------------------------------------------------------------------


class Bus:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.origin = secrets.token_hex(8)  # this process, to skip its own notifications
        self.handlers: dict[str, list[Handler]] = defaultdict(list)
        self._listener: asyncio.Task[None] | None = None
        self._consumer: asyncio.Task[None] | None = None
        # Notifications in the order they came, handled one at a time: an edit of a
        # message is never pushed before the message.
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.listening = asyncio.Event()  # the LISTEN is in place (tests wait for it)

    @property
    def shared(self) -> bool:
        """Other processes may use this database (PostgreSQL)."""
        return not self.db.is_sqlite

    def subscribe(self, topic: str, handler: Handler) -> None:
        self.handlers[topic].append(handler)

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        await self._run_handlers(topic, payload)
        if not self.shared:
            return
        try:
            body = json.dumps({"o": self.origin, "t": topic, "p": payload}, ensure_ascii=False)
            if len(body.encode()) > MAX_INLINE_BYTES:
                spill_id = await self.db.write(spill, topic, payload)
                body = json.dumps({"o": self.origin, "t": topic, "s": spill_id})
            await self.db.write(notify, body)
        except Exception:
            # Best effort (see the module's docstring): the widget reads its history again.
            log.exception("bus: telling the other hub processes about %s failed", topic)

    async def _run_handlers(self, topic: str, payload: dict[str, Any]) -> None:
        for handler in self.handlers.get(topic, ()):
            try:
                await handler(payload)
            except Exception:
                log.exception("bus: a handler of %s failed", topic)

    # -- listening (PostgreSQL) -------------------------------------------------------------

    async def start(self) -> None:
        if self.shared and self._listener is None:
            self._consumer = asyncio.create_task(self._consume(), name="bus-consumer")
            self._listener = asyncio.create_task(self._listen(), name="bus-listener")

    async def stop(self) -> None:
        for task in (self._listener, self._consumer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._consumer = None

    async def _listen(self) -> None:
        attempt = 0
        while True:
            lost = asyncio.Event()
            try:
                async with self.db.engine.connect() as conn:
                    raw = (await conn.get_raw_connection()).driver_connection
                    assert raw is not None
                    raw.add_termination_listener(lambda _c, lost=lost: lost.set())
                    await raw.add_listener(CHANNEL, self._received)
                    if attempt:
                        log.info("bus: listening again after %d attempt(s)", attempt)
                    attempt = 0
                    self.listening.set()
                    try:
                        await self._watch(raw, lost)
                    finally:
                        if not lost.is_set():  # back to the pool without its LISTEN
                            with contextlib.suppress(Exception):
                                await raw.remove_listener(CHANNEL, self._received)
                    log.warning("bus: the listening connection was lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bus: cannot listen for the other hub processes: %s", exc)
            finally:
                self.listening.clear()
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1

    async def _watch(self, raw: Any, lost: asyncio.Event) -> None:
        """Until the connection is lost. A connection that died without a reset (a NAT's
        timeout, a fail-over) tells nobody: asked every WATCH_SECONDS, it must answer."""
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), WATCH_SECONDS)
                return
            try:
                await raw.fetchval("SELECT 1", timeout=10)
            except Exception as exc:
                log.warning("bus: the listening connection does not answer (%s)", exc)
                with contextlib.suppress(Exception):
                    raw.terminate()
                return

    def _received(self, _conn: object, _pid: int, _channel: str, body: str) -> None:
        try:
            note = json.loads(body)
        except ValueError:
            log.warning("bus: ignored a notification that is not JSON")
            return
        if isinstance(note, dict) and note.get("o") != self.origin:
            self._inbox.put_nowait(note)

    async def _consume(self) -> None:
        while True:
            note = await self._inbox.get()
            await self._dispatch(note)

    async def _dispatch(self, note: dict[str, Any]) -> None:
        topic = str(note.get("t", ""))
        payload = note.get("p")
        if "s" in note:
            try:
                payload = await self.db.read(spilled, int(note["s"]))
            except Exception:
                log.exception("bus: reading spilled message %s failed", note["s"])
                return
        if isinstance(payload, dict):
            await self._run_handlers(topic, payload)
