"""Read receipts across the bridge: advisers reading customers' messages, and back."""

from __future__ import annotations

import logging
from collections.abc import Callable

from hub.bridges.base import Channels
from hub.db import receipts
from hub.db.database import Database, Tx
from hub.jobs import kinds
from hub.jobs.job import Finish, Job, handles
from hub.matrix.client import MatrixClient

log = logging.getLogger(__name__)


def read_event_ids(content: dict[str, object], is_own: object) -> list[str]:
    """Event ids an m.receipt EDU marks as read by someone other than the hub's own users."""
    found: list[str] = []
    for event_id, by_type in content.items():
        if not isinstance(by_type, dict):
            continue
        readers = by_type.get("m.read")
        if isinstance(readers, dict) and any(not is_own(u) for u in readers):  # type: ignore[operator]
            found.append(event_id)
    return found


class Receipts:
    def __init__(
        self,
        db: Database,
        matrix: MatrixClient,
        channels: Channels,
        is_own: Callable[[str], bool],
    ) -> None:
        self.db = db
        self.matrix = matrix
        self.channels = channels
        self.is_own = is_own

    @handles(kinds.MATRIX_RECEIPT_IN)
    async def adviser_read(self, job: Job) -> Finish | None:
        """An adviser read up to an event; the customer may see "read"."""
        event_ids = read_event_ids(job.payload.get("content", {}), self.is_own)
        if not event_ids:
            return None

        def finish(tx: Tx) -> None:
            changed = receipts.adviser_read(tx, event_ids)

            async def notify() -> None:
                # Only once committed: a widget told "read" may read its history at once.
                for channel, external_id, ids in changed:
                    if channel in self.channels:
                        await self.channels[channel].status_changed(external_id, ids, "read")

            if changed:
                tx.after_commit(notify)

        return finish

    @handles(kinds.MATRIX_RECEIPT_OUT)
    async def send(self, job: Job) -> None:
        """The ghost's read receipt on an adviser's message."""
        p = job.payload
        await self.matrix.send_receipt(p["room_id"], p["event_id"], p["as_user"])
        return None
