"""Config of end-to-bridge encryption (`encryption`): the hub taking part in encrypted portal
rooms with a device of its bot (hub.matrix.crypto)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hub.config.section import Section


class EncryptionConfig(Section):
    # Take part in encrypted portal rooms: decrypt advisers' events, encrypt what the bot and
    # the customers' ghosts send, and create new portals encrypted. Needs a homeserver that
    # pushes to-device messages and key counts to appservices (Synapse: the experimental
    # options msc2409_to_device_messages_enabled and msc3202_transaction_extensions, see
    # docs/encryption.md), and the registration written by `hub generate-registration` with
    # this key on. Off: the hub refuses to start against a homeserver that encrypts new rooms.
    enabled: bool = False
    # The bot's device on the homeserver, created by the hub (MSC4190). Keep it stable: a new
    # id is a new device that advisers' clients must learn to trust again.
    device_id: str = Field("COMMERCEHUB", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    # Passphrase that encrypts the stored Olm/Megolm state in the database. null: derived
    # from appservice.as_token (then changing that token makes the stored state unreadable).
    pickle_key: Annotated[str, Field(min_length=16)] | None = None
    # Advisers whose device joins a portal later still read its history: the hub forwards the
    # room keys it holds to advisers' devices (only advisers of `shop.advisers`).
    share_history_with_advisers: bool = True
    # An adviser's new device (a new phone, a new Element login) gets the keys of the portals
    # they are in that had messages in this many days.
    history_days: float = Field(7, ge=0, le=3650)
    # An encrypted event whose room key has not arrived yet is retried this long before the
    # room is told it cannot reach the customer; also how long the start-up check waits for
    # the homeserver to push the hub's own to-device message back.
    key_wait_seconds: float = Field(20.0, ge=0, le=600)
