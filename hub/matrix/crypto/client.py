"""The homeserver client of a hub with encryption on: what the bot and the ghosts send into
an encrypted room is encrypted by the bot's device first, and new portals are created
encrypted. Everything else is MatrixClient's, so every sender of the hub (deliveries,
notices, commands' answers) goes through this one place."""

from __future__ import annotations

from typing import Any

from hub.matrix.client import MatrixClient
from hub.matrix.crypto.machine import CryptoMachine

ENCRYPTED = "m.room.encrypted"


class EncryptingClient(MatrixClient):
    crypto: CryptoMachine | None = None  # set once the device is ready (hub.app)

    async def send_event(
        self,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        txn_id: str,
        *,
        as_user: str | None = None,
    ) -> str:
        if (
            self.crypto is not None
            and event_type != ENCRYPTED
            and await self.crypto.room_encrypted(room_id)
        ):
            content = await self.crypto.encrypt(room_id, event_type, content)
            event_type = ENCRYPTED
        return await super().send_event(room_id, event_type, content, txn_id, as_user=as_user)

    async def create_room(self, *, encrypted: bool = False, **kwargs: Any) -> str:
        room_id = await super().create_room(
            encrypted=encrypted or self.crypto is not None, **kwargs
        )
        if self.crypto is not None:
            self.crypto.mark_encrypted(room_id)
        return room_id
