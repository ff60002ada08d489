"""The room's name says who has the conversation ("WhatsApp · Kim Müller · 👤 Anna", "✔"
once closed): the `advisers.room_label` job, queued by every change of assignee or status
(hub.db.assignments)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hub.advisers.routing import display_name_fallback, room_label
from hub.db import assignments
from hub.db.database import Database
from hub.jobs import kinds
from hub.jobs.job import Finish, Job, handles
from hub.matrix.client import MatrixClient

if TYPE_CHECKING:
    from hub.db.database import Tx

log = logging.getLogger(__name__)


class RoomLabels:
    def __init__(self, db: Database, matrix: MatrixClient) -> None:
        self.db = db
        self.matrix = matrix
        # Advisers' display names for the life of the process: a label is set on every
        # assignment, and a profile lookup each time would double the homeserver calls for a
        # name that hardly ever changes (a renamed adviser shows from the next restart).
        self._names: dict[str, str] = {}

    async def adviser_name(self, mxid: str) -> str:
        found = self._names.get(mxid)
        if found is None:
            found = await self.matrix.display_name(mxid) or display_name_fallback(mxid)
            self._names[mxid] = found
        return found

    @handles(kinds.ADVISERS_ROOM_LABEL)
    async def label(self, job: Job) -> Finish | None:
        """Set the room's name from the conversation as it is now (not as it was when the job
        was queued): several changes in a row end in the latest one's name."""
        conversation_id = int(job.payload["conversation_id"])
        conversation, shown = await self.db.read(assignments.label_state, conversation_id)
        if conversation is None or not conversation.room_id or not conversation.room_name:
            # No room (its delivery gave up, or it was erased): nothing to name.
            return None
        name = None
        if conversation.assignee is not None:
            name = await self.adviser_name(conversation.assignee)
        wanted = room_label(conversation.room_name, name, conversation.status)
        if wanted == shown:
            return None
        await self.matrix.put_state(conversation.room_id, "m.room.name", {"name": wanted})

        def finish(tx: Tx) -> None:
            assignments.set_label(tx, conversation_id, wanted)

        return finish
