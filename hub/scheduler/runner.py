"""The alarms of timers: rows in hub.db.timers are the record, APScheduler holds an alarm for
each pending one in this process, and firing runs hub.scheduler.automations in one unit of
work that first claims the row (pending → fired).

- At start every pending row is armed; the ones that came due while the hub was down fire at
  once (a scheduled message too late by the config's limit is dropped with a notice there).
- A timer added by a unit is armed when that unit commits (the database calls `arm`).
- A sweep every `sweep_seconds` fires what is due and was armed nowhere here: a timer another
  hub process added on the same PostgreSQL, or one whose firing failed. The claim makes sure
  that of the alarm, the sweep and other processes only one fires a timer.

APScheduler runs on the real clock; the hub's clock (hub.core.clock) may be set ahead for a
staging hub, so an alarm rings at `due − offset`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from hub.core import clock
from hub.db import timers
from hub.db.database import Database
from hub.scheduler.automations import Automations

if TYPE_CHECKING:
    from hub.db.database import Tx

log = logging.getLogger(__name__)

# A timer whose firing failed this often is set aside ("failed") rather than retried forever.
MAX_ATTEMPTS = 5

# Fires the timers of its own kinds (e.g. hub.advisers.assignment's requeue check): True or
# False as Automations.fire, None for a timer of another kind.
TimerFirer = Callable[["Tx", int], "bool | None"]


class TimerRunner:
    """The database's timer sink (hub.db.database.TimerSink)."""

    def __init__(
        self,
        db: Database,
        automations: Automations,
        sweep_seconds: float = 30,
        firers: Sequence[TimerFirer] = (),
    ) -> None:
        self._db = db
        self._automations = automations
        self._firers = tuple(firers)
        self._sweep_seconds = sweep_seconds
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._failures: dict[int, int] = {}

    async def start(self) -> None:
        self._scheduler.start()
        # The sink first: a timer committed while the pending ones are read is armed too.
        self._db.timer_sink = self
        pending = await self._db.read(timers.pending)
        for timer_id, due_at in pending:
            self.arm(timer_id, due_at)
        self._scheduler.add_job(
            self.sweep,
            "interval",
            seconds=self._sweep_seconds,
            id="timers:sweep",
            coalesce=True,
            max_instances=1,
        )
        log.info("timers: %d pending armed", len(pending))

    def every(
        self, job_id: str, work: Callable[[], Awaitable[object]], interval: timedelta
    ) -> None:
        """Housekeeping at an interval (retention, resumed deletions), first a few minutes
        after start so a restart loop does not run it over and over at once."""
        self._scheduler.add_job(
            work,
            "interval",
            seconds=interval.total_seconds(),
            id=job_id,
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC) + timedelta(minutes=5),
        )

    async def stop(self) -> None:
        self._db.timer_sink = None
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def arm(self, timer_id: int, due_at: datetime) -> None:
        ring_at = due_at - clock.offset()
        self._scheduler.add_job(
            self.fire,
            "date",
            run_date=max(ring_at, datetime.now(UTC)),
            args=[timer_id],
            id=f"timer:{timer_id}",
            replace_existing=True,
            misfire_grace_time=None,  # late (the loop was busy) is better than never
        )

    async def sweep(self) -> None:
        due = await self._db.read(timers.pending, clock.now() + timedelta(seconds=1))
        for timer_id, _due in due:
            await self.fire(timer_id)

    def _fire(self, tx: Tx, timer_id: int) -> bool:
        """The unit of work that fires a timer: its kind's firer, else the automations."""
        for firer in self._firers:
            fired = firer(tx, timer_id)
            if fired is not None:
                return fired
        return self._automations.fire(tx, timer_id)

    async def fire(self, timer_id: int) -> None:
        try:
            fired = await self._db.write(self._fire, timer_id)
        except Exception:
            attempts = self._failures.get(timer_id, 0) + 1
            self._failures[timer_id] = attempts
            log.exception("timer %d failed to fire (attempt %d)", timer_id, attempts)
            if attempts >= MAX_ATTEMPTS:
                await self._db.write(timers.set_aside, timer_id)
                self._failures.pop(timer_id, None)
                log.error("timer %d set aside after %d failed attempts", timer_id, attempts)
            return
        self._failures.pop(timer_id, None)
        if fired:
            log.info("timer %d fired", timer_id)
