"""What the dispatcher needs of end-to-bridge encryption: turn an `m.room.encrypted` event
into the event an adviser's client sent (hub.matrix.crypto implements it)."""

from __future__ import annotations

from typing import Any, Protocol


class Undecryptable(Exception):
    """The hub cannot read this event and never will (no key for it was shared with the
    hub's device, an unknown algorithm, a broken payload). `reason` is for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RoomKeyMissing(Undecryptable):
    """The room key is not here yet; it may still arrive (to-device messages and room
    events reach the hub in separate transactions), so the event is worth retrying."""


class Decryptor(Protocol):
    async def decrypt(self, event: dict[str, Any]) -> dict[str, Any]:
        """The plaintext event: the same event_id, room_id, sender and origin_server_ts,
        with the type and content the sender encrypted (relations such as m.relates_to
        kept). Raises RoomKeyMissing or Undecryptable."""
        ...
