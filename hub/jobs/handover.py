"""Jobs handed from the storing transaction straight to the worker (an SQLite file only).

Without it every job costs a second write transaction: the worker's claim. With writers of
one process serialised (hub.db.sqlite's writer lock, BEGIN IMMEDIATE), "no other job of this
key is pending" stays true until the storing transaction commits, so that transaction may
lease the job to this worker itself (hub.db.jobs.enqueue with the `LeaseOffer` made here),
and the worker starts it once the commit is through. On PostgreSQL several processes write
at once; there jobs are always claimed.

Bursts: jobs handed over while other urgent writes are still being stored (a burst of
webhooks or widget messages) wait for them, at most BURST_WAIT, so the burst reaches the
homeserver together: Synapse persists events that arrive together in one batch and pushes
them in fewer /sync responses and appservice transactions (spread over the time the stores
took, a burst cost Synapse a fifth more CPU per message; bench/relay.py). A job handed over
alone starts at once; only sends wait, never stores.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from hub.db.jobs import LeaseOffer

if TYPE_CHECKING:
    from hub.jobs.worker import Worker

BURST_WAIT = 0.01  # at most this long a handed-over job waits for the rest of its burst


class Handover:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._urgent_out = 0  # urgent writes running that may hand over jobs
        self._gate: asyncio.Event | None = None
        # Keys that got a job while the worker ran a chain of them: that chain leases it
        # when it finishes its own job, or wakes the worker when it ends.
        self.missed_keys: set[str] = set()

    def offer(self, urgent: bool) -> LeaseOffer:
        w = self.worker
        offer = LeaseOffer(
            w.worker_id,
            w.config.lease_seconds,
            set(w.inflight),
            max(0, w.config.concurrency - len(w.inflight)),
            urgent=urgent,
            preloads=w.preloads,
        )
        self._urgent_out += urgent
        return offer

    def settled(self, offer: LeaseOffer, committed: bool) -> None:
        self._urgent_out -= offer.urgent
        if committed:
            self._adopt(offer)
        if self._urgent_out == 0:
            self._open_gate()

    def _adopt(self, offer: LeaseOffer) -> None:
        w = self.worker
        if w.stopping:
            w.wake()  # taken jobs stay leased until the next start releases them
            return
        gate = self._burst_gate() if offer.taken else None
        for row, context in offer.taken:
            w.start(row, context, gate)
        for key in offer.missed:
            if key in w.inflight:
                self.missed_keys.add(key)
            else:
                w.wake()

    def chain_ended(self, key: str) -> bool:
        """A chain of `key` ended; True if a job of it was queued meanwhile (claim it)."""
        if key in self.missed_keys:
            self.missed_keys.discard(key)
            return True
        return False

    def _burst_gate(self) -> asyncio.Event | None:
        if self._gate is not None:
            return self._gate
        if self._urgent_out == 0:
            return None
        gate = self._gate = asyncio.Event()
        asyncio.get_running_loop().call_later(BURST_WAIT, self._open_gate, gate)
        return gate

    def _open_gate(self, gate: asyncio.Event | None = None) -> None:
        """Let the held jobs go (`gate`: only if that one is still the current gate)."""
        if self._gate is not None and gate in (None, self._gate):
            self._gate.set()
            self._gate = None
