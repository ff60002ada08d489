"""Portal rooms and ghost users: make sure a conversation has its room and its customer."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from hub.db import conversations, lobby
from hub.db.database import Database
from hub.db.delivery import set_ghost_profile_name
from hub.db.models import ChannelIdentity, Conversation
from hub.i18n import _
from hub.matrix.client import MatrixClient, MatrixError

log = logging.getLogger(__name__)

ADVISER_POWER = 50


def room_name(channel_label: str, identity: ChannelIdentity) -> str:
    """ "WhatsApp · Anna Müller"; the channel's label in the shop's language ("Webchat")."""
    who = identity.display_name or identity.external_id[:8]
    return _(channel_label) + " · " + who


@dataclass(frozen=True)
class PortalSettings:
    domain: str  # the homeserver's server name
    bot_mxid: str
    ghost_prefix: str
    alias_prefix: str
    advisers: tuple[str, ...]
    shop_name: str
    # Portals become children of the advisers' space (routing.space).
    space: bool = False


@dataclass
class Portals:
    db: Database
    matrix: MatrixClient
    settings: PortalSettings
    # One creation at a time per conversation inside this process.
    _locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    def ghost_mxid(self, identity: ChannelIdentity) -> str:
        return f"@{identity.ghost_localpart}:{self.settings.domain}"

    def is_own(self, mxid: str) -> bool:
        """The bot and every ghost: their events come back to us and must be dropped."""
        if mxid == self.settings.bot_mxid:
            return True
        localpart, _, server = mxid[1:].partition(":")
        return server == self.settings.domain and localpart.startswith(self.settings.ghost_prefix)

    async def ensure_ghost(self, identity: ChannelIdentity) -> str:
        """Register the ghost lazily and keep its display name current."""
        mxid = self.ghost_mxid(identity)
        wanted = identity.display_name or _("Customer")
        if identity.ghost_profile_name == wanted:
            return mxid
        await self.matrix.ensure_registered(identity.ghost_localpart)
        await self.matrix.set_displayname(mxid, wanted)
        await self.db.write(set_ghost_profile_name, identity.id, wanted)
        # Callers hold this object for the rest of the delivery (ensure_room, then the send):
        # without this they would register the ghost and set its name a second time.
        identity.ghost_profile_name = wanted
        return mxid

    async def ensure_room(
        self, conversation: Conversation, identity: ChannelIdentity, channel_label: str
    ) -> str:
        if conversation.room_id:
            return conversation.room_id
        lock = self._locks.setdefault(conversation.id, asyncio.Lock())
        async with lock:
            fresh, _ = await self.db.read(conversations.conversation_with_identity, conversation.id)
            if fresh.room_id:
                return fresh.room_id
            ghost = await self.ensure_ghost(identity)
            room_id = await self._create_room(conversation, identity, channel_label, ghost)
            await self.matrix.join(room_id, ghost)
            # With the room: its context notice, its place in the space, the lobby's link.
            await self.db.write(
                lobby.portal_recorded,
                conversation.id,
                room_id,
                room_name(channel_label, identity),
                space=self.settings.space,
            )
            log.info("portal room %s created for conversation %s", room_id, conversation.id)
            self._locks.pop(conversation.id, None)
            return room_id

    async def _create_room(
        self,
        conversation: Conversation,
        identity: ChannelIdentity,
        channel_label: str,
        ghost: str,
    ) -> str:
        alias_localpart = f"{self.settings.alias_prefix}{conversation.id}"
        advisers = [a for a in self.settings.advisers if a != self.settings.bot_mxid]
        try:
            return await self.matrix.create_room(
                alias_localpart=alias_localpart,
                name=room_name(channel_label, identity),
                topic=_("{channel} conversation with a customer of {shop}").format(
                    channel=_(channel_label), shop=self.settings.shop_name
                ),
                invite=[ghost, *advisers],
                power_users={a: ADVISER_POWER for a in advisers},
            )
        except MatrixError as exc:
            # A crash after the homeserver created the room but before we stored its id:
            # the alias is taken, so the room exists; adopt it instead of making a second one.
            if exc.errcode != "M_ROOM_IN_USE":
                raise
            alias = f"#{alias_localpart}:{self.settings.domain}"
            found = await self.matrix.resolve_alias(alias)
            if found is None:
                raise
            log.info("adopting existing portal room %s for conversation %s", found, conversation.id)
            for member in [ghost, *advisers]:
                await self.matrix.invite(found, member)
            return found
