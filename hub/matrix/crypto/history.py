"""Sharing a portal's history with an adviser who joined it after it began: the room keys
of the sessions the bot started there, sent to each of the adviser's devices (a job, so a
crash or an outage loses none)."""

from __future__ import annotations

import logging

from hub.jobs import kinds
from hub.jobs.job import Finish, Job, handles
from hub.matrix.crypto.machine import CryptoMachine

log = logging.getLogger(__name__)


class HistorySharing:
    def __init__(self, machine: CryptoMachine) -> None:
        self.machine = machine

    @handles(kinds.CRYPTO_SHARE_HISTORY)
    async def share(self, job: Job) -> Finish | None:
        await self.machine.share_history_with(job.payload["room_id"], job.payload["user_id"])
        return None
