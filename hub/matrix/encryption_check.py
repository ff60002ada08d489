"""Does the homeserver encrypt the rooms the hub creates? Checked at start-up.

Many homeservers make every new private room encrypted
(`encryption_enabled_by_default_for_room_type`). A hub without end-to-bridge encryption
could not read a word advisers write in such portals: their clients send only
`m.room.encrypted`. Better to refuse to start, saying which setting to change, than to run
and lose every reply in silence.
"""

from __future__ import annotations

import logging

from hub.errors import ExternalError, StartupError
from hub.matrix.client import MatrixClient

log = logging.getLogger(__name__)

REFUSAL = (
    "the homeserver encrypts new rooms, and this hub does not take part in encrypted rooms: "
    "advisers' replies in its portal rooms could never reach the customers. Either set "
    "`encryption_enabled_by_default_for_room_type: off` in the homeserver's homeserver.yaml "
    "(Synapse) and restart it, or enable end-to-bridge encryption with "
    "`encryption.enabled: true` in the hub's config, then run `hub generate-registration` "
    "again and turn on the homeserver's experimental options for it (see docs/encryption.md)"
)


async def homeserver_encrypts_new_rooms(matrix: MatrixClient) -> bool:
    """Create a throw-away room exactly as a portal is made and look at its encryption.

    A probe rather than reading the homeserver's config: that is not visible over the
    client-server API, and other homeservers decide this their own way."""
    room_id = await matrix.create_room(
        alias_localpart="",  # an alias would outlive the room
        name="",
        topic="",
        invite=[],
        power_users={},
    )
    try:
        state = await matrix.room_state(room_id, "m.room.encryption")
    finally:
        await _discard(matrix, room_id)
    return state is not None and bool(state.get("algorithm"))


async def _discard(matrix: MatrixClient, room_id: str) -> None:
    """Leave and forget the probe room; the homeserver may then purge it. A room left
    behind costs nothing but a row, so failing here must not stop the hub."""
    try:
        await matrix.leave(room_id)
        await matrix.forget(room_id)
    except ExternalError as exc:
        log.debug("probe room %s not discarded: %s", room_id, exc)
    else:
        log.debug("probe room %s left and forgotten", room_id)


async def check_encryption_support(matrix: MatrixClient, enabled: bool) -> None:
    """Refuse to start (StartupError) when the homeserver encrypts new rooms and the hub's
    end-to-bridge encryption is off."""
    if enabled:
        # The hub creates its portals encrypted itself: whatever the homeserver defaults to,
        # the hub reads them.
        log.info("end-to-bridge encryption is on: new portal rooms are created encrypted")
        return
    try:
        encrypts = await homeserver_encrypts_new_rooms(matrix)
    except (ExternalError, KeyError) as exc:
        # A homeserver that is down (start-up tolerates that), refuses room creation or
        # answers without a room id: the question stays open, and refusing to start over it
        # would be worse than going on.
        log.warning("could not check whether the homeserver encrypts new rooms: %s", exc)
        return
    if encrypts:
        raise StartupError(REFUSAL)
    log.info("the homeserver creates new rooms unencrypted: portal rooms stay readable")
