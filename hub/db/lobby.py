"""The lobby's listing and the hub's own state (hub_state) as units of work."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from hub.db.jobs import enqueue
from hub.jobs.kinds import ADVISERS_LOBBY

if TYPE_CHECKING:
    from hub.db.database import Tx

LOBBY_KEY = "lobby"


def refresh_lobby(tx: Tx) -> None:
    """Queue bringing the lobby's listing up to date, after whatever this transaction
    changed (a new, claimed, assigned, closed or reopened conversation). The refresh reads
    the state afresh and does nothing when the listing would not change, so queuing one per
    change costs little and several in a row collapse into one edit."""
    enqueue(tx, ADVISERS_LOBBY, LOBBY_KEY, {}, f"refresh:{uuid.uuid4().hex}")
