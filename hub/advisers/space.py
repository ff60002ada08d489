"""The advisers' side of Matrix beyond the portals: the space that groups every portal, the
lobby's listing of waiting conversations, the customer's context pinned in a new portal, and
the commands `!t` (canned replies) and `!customer`.

What these say is worded by the pure modules beside this one (lobby, canned, context); the
facts come from hub.db.lobby and hub.db.context. Every handler here is safe to run twice:
the job queue retries after a crash, and the space's jobs also run again at every start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.advisers.canned import (
    CannedLike,
    canned_listing,
    find_canned,
    image_filename,
    render_canned,
    unknown_canned,
)
from hub.advisers.context import CustomerFacts, render_context
from hub.advisers.lobby import MAX_LINES, render_listing
from hub.advisers.routing import may_answer
from hub.commerce.service import Shop
from hub.config import Config
from hub.core import clock
from hub.core.bot import CommandContext, CommandHandler
from hub.core.commands import CommandSpec, ParsedCommand, WordArg
from hub.db import context as context_db
from hub.db import lobby as lobby_db
from hub.db import notices
from hub.db.database import Database, Tx
from hub.db.jobs import conversation_key, enqueue
from hub.db.models import Conversation
from hub.errors import UserError
from hub.i18n import N_, _
from hub.jobs import kinds
from hub.jobs.job import Finish, Job, handles
from hub.matrix.client import MatrixClient, MatrixError
from hub.matrix.render import STATUS_KEY

log = logging.getLogger(__name__)

ADVISER_POWER = 50  # as in the portals: advisers may not rename or re-parent the space
HTML = "org.matrix.custom.html"


@dataclass(frozen=True)
class AdvisersSettings:
    domain: str  # the homeserver's server name, the `via` of space links
    bot_mxid: str
    alias_prefix: str
    advisers: tuple[str, ...]
    shop_name: str
    locale: str
    timezone: str
    order_prefix: str
    command_prefix: str
    lobby_room: str | None
    space: bool
    # routing.others_may_answer: whether a canned reply of a non-assignee reaches the customer
    others_may_answer: bool = True
    # channel kind → its label ("whatsapp" → "WhatsApp"), an English msgid
    channel_labels: Mapping[str, str] = field(default_factory=dict)

    def label(self, channel: str) -> str:
        return self.channel_labels.get(channel, channel)

    @classmethod
    def of(cls, config: Config, channel_labels: Mapping[str, str]) -> AdvisersSettings:
        return cls(
            domain=config.homeserver.domain,
            bot_mxid=config.bot_mxid,
            alias_prefix=config.appservice.alias_prefix,
            advisers=tuple(config.shop.advisers),
            shop_name=config.shop.name,
            locale=config.shop.locale,
            timezone=config.shop.timezone,
            order_prefix=config.commerce.order_number_prefix,
            command_prefix=config.bot.command_prefix,
            lobby_room=config.shop.lobby_room,
            space=config.routing.space,
            others_may_answer=config.routing.others_may_answer,
            channel_labels=dict(channel_labels),
        )


def notice_content(text: str, html: str) -> dict[str, Any]:
    return {"msgtype": "m.notice", "body": text, "format": HTML, "formatted_body": html}


def edit_content(event_id: str, text: str, html: str) -> dict[str, Any]:
    """An edit of the bot's notice: clients that know edits show `m.new_content` in place;
    the others show the "* " fallback as a new message."""
    return {
        **notice_content("* " + text, "* " + html),
        "m.new_content": notice_content(text, html),
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
    }


class LobbyListing:
    """One message of the bot in the lobby lists the conversations nobody has; it is edited
    rather than posted again, so the room is not flooded and the listing stays findable."""

    def __init__(self, db: Database, matrix: MatrixClient, settings: AdvisersSettings) -> None:
        self.db = db
        self.matrix = matrix
        self.settings = settings

    async def queue_refresh(self) -> None:
        """The every-minute refresh: waiting times move on though nothing else changed."""
        if self.settings.lobby_room:
            tick = clock.now().strftime("%Y%m%d%H%M")
            await self.db.write(lobby_db.refresh_lobby, tick)

    @handles(kinds.ADVISERS_LOBBY)
    async def refresh(self, job: Job) -> Finish | None:
        room = self.settings.lobby_room
        if not room:
            return None
        waiting, total = await self.db.read(
            lobby_db.waiting_conversations, MAX_LINES, self.settings.channel_labels
        )
        text, html = render_listing(waiting, total, clock.now(), self.settings.locale)
        known = await self.db.read(lobby_db.get_state, lobby_db.LISTING_KEY) or {}
        same_room = known.get("room_id") == room
        if same_room and known.get("text") == text:
            return None
        original = known.get("event_id") if same_room else None
        txn = f"hub-job-{job.id}"
        if isinstance(original, str) and original:
            await self.matrix.send_event(
                room, "m.room.message", edit_content(original, text, html), txn
            )
            event_id = original
        else:
            event_id = await self.matrix.send_event(
                room, "m.room.message", notice_content(text, html), txn
            )
        value = {"room_id": room, "event_id": event_id, "text": text}

        def finish(tx: Tx) -> None:
            lobby_db.set_state(tx, lobby_db.LISTING_KEY, value)

        return finish


class AdvisersSpace:
    """One Matrix space with every portal as a child, so each client groups the customers'
    rooms; the advisers are invited to it."""

    def __init__(self, db: Database, matrix: MatrixClient, settings: AdvisersSettings) -> None:
        self.db = db
        self.matrix = matrix
        self.settings = settings

    @property
    def _advisers(self) -> list[str]:
        return [a for a in self.settings.advisers if a != self.settings.bot_mxid]

    @handles(kinds.ADVISERS_SPACE)
    async def on_job(self, job: Job) -> None:
        state = await self.db.read(lobby_db.get_state, lobby_db.SPACE_KEY) or {}
        if not self.settings.space:
            if state.get("synced"):
                # Portals made while it is off are nobody's children: add them when it is on.
                await self.db.write(
                    lobby_db.set_state, lobby_db.SPACE_KEY, {**state, "synced": False}
                )
            return None
        state = await self._ensure_space(state)
        space = str(state["room_id"])
        if job.payload.get("sync"):
            if not state.get("synced"):
                await self._add_all(space)
                await self.db.write(
                    lobby_db.set_state, lobby_db.SPACE_KEY, {**state, "synced": True}
                )
        elif isinstance(job.payload.get("room_id"), str):
            await self.add_child(space, job.payload["room_id"])
        return None

    async def _ensure_space(self, state: dict[str, Any]) -> dict[str, Any]:
        """The space, made on first use; advisers added to the config since are invited.
        Returns its hub_state value."""
        space = state.get("room_id")
        invited = {str(a) for a in state.get("invited", [])}
        if not isinstance(space, str) or not space:
            space = await self._create_space()
            invited = set(self._advisers)
        else:
            for adviser in self._advisers:
                if adviser not in invited:
                    await self.matrix.invite(space, adviser)
                    invited.add(adviser)
        wanted = {**state, "room_id": space, "invited": sorted(invited)}
        if wanted != state:
            await self.db.write(lobby_db.set_state, lobby_db.SPACE_KEY, wanted)
        return wanted

    async def _create_space(self) -> str:
        advisers = self._advisers
        alias_localpart = f"{self.settings.alias_prefix}space"
        shop = self.settings.shop_name
        body = {
            "visibility": "private",
            "preset": "private_chat",
            "name": _("{shop} · Customers").format(shop=shop),
            "topic": _("Every customer conversation of {shop}").format(shop=shop),
            "creation_content": {"type": "m.space", "m.federate": True},
            "room_alias_name": alias_localpart,
            "invite": advisers,
            # A space holds links, not talk; only the bot changes them.
            "power_level_content_override": {
                "users": {a: ADVISER_POWER for a in advisers},
                "events_default": 100,
                # Name, topic and the children too: Synapse's defaults would let 50 change them.
                "state_default": 100,
                "events": {"m.room.name": 100, "m.room.topic": 100, "m.space.child": 100},
            },
        }
        try:
            # Not MatrixClient.create_room: a space needs its creation type, and it must stay
            # unencrypted (it carries no messages) when the portals are encrypted.
            doc = await self.matrix.request("POST", "/_matrix/client/v3/createRoom", body)
            space = str(doc["room_id"])
        except MatrixError as exc:
            # Made before a crash that came ahead of recording it: the alias tells.
            if exc.errcode != "M_ROOM_IN_USE":
                raise
            found = await self.matrix.resolve_alias(f"#{alias_localpart}:{self.settings.domain}")
            if found is None:
                raise
            space = found
            for adviser in advisers:
                await self.matrix.invite(space, adviser)
        log.info("advisers' space %s created", space)
        return space

    async def add_child(self, space: str, room_id: str) -> None:
        """Both directions, as the spec asks: the space lists the room, the room names its
        space. Setting the same state again changes nothing, so a retry is harmless."""
        via = [self.settings.domain]
        await self.matrix.put_state(space, "m.space.child", {"via": via}, room_id)
        await self.matrix.put_state(
            room_id, "m.space.parent", {"via": via, "canonical": True}, space
        )

    async def _add_all(self, space: str) -> None:
        """Every portal, once per space (e.g. those from before it): hub_state remembers
        that it was done; later portals come one by one from hub.matrix.portal."""
        rooms = await self.db.read(lobby_db.portal_rooms)
        added = 0
        for room_id in rooms:
            try:
                await self.add_child(space, room_id)
                added += 1
            except MatrixError as exc:
                if exc.status not in (403, 404):
                    raise
                # A room the bot has left or that was purged (an erased customer).
                log.info("portal %s not added to the space: %s", room_id, exc)
        log.info("advisers' space %s: %d of %d portals added", space, added, len(rooms))


class CustomerContext:
    """The customer's context as a notice: pinned in a new portal, again with `!customer`."""

    def __init__(self, db: Database, matrix: MatrixClient, settings: AdvisersSettings) -> None:
        self.db = db
        self.matrix = matrix
        self.settings = settings

    def render(self, facts: CustomerFacts) -> tuple[str, str]:
        s = self.settings
        return render_context(
            facts,
            s.label(facts.channel),
            locale=s.locale,
            timezone=s.timezone,
            order_prefix=s.order_prefix,
        )

    @handles(kinds.ADVISERS_CONTEXT)
    async def post(self, job: Job) -> None:
        conversation_id = job.payload["conversation_id"]
        facts = await self.db.read(context_db.customer_facts, conversation_id)
        if facts is None or not facts.room_id:
            log.info("no context notice for conversation %s: no room", conversation_id)
            return None
        room = facts.room_id
        text, html = self.render(facts)
        # The job's id as the transaction id: a retry after the send is the same event.
        content = notice_content(text, html) | {STATUS_KEY: "context"}
        event_id = await self.matrix.send_event(
            room, "m.room.message", content, f"hub-job-{job.id}"
        )
        pinned = await self.matrix.room_state(room, "m.room.pinned_events") or {}
        # Whatever the room holds (another client may have written junk) is read defensively.
        listed = pinned.get("pinned") if isinstance(pinned, dict) else None
        pins = [p for p in listed if isinstance(p, str)] if isinstance(listed, list) else []
        if event_id not in pins:
            await self.matrix.put_state(room, "m.room.pinned_events", {"pinned": [*pins, event_id]})
        return None

    def show(self, ctx: CommandContext, parsed: ParsedCommand[CommandHandler]) -> None:
        conversation = ctx.customer_conversation()
        facts = context_db.customer_facts(ctx.tx, conversation.id)
        if facts is None:  # the conversation of the room being erased at this moment
            raise UserError(_("This command works in a customer's room only."))
        text, html = self.render(facts)
        ctx.reply(text, html)

    def specs(self) -> list[CommandSpec[CommandHandler]]:
        return [
            CommandSpec("customer", self.show, help=N_("Show what we know about this customer"))
        ]


class CannedReplies:
    """`!t` lists the shop's canned replies, `!t NAME` sends one to the customer as the
    adviser's message. The adviser's display name is Matrix's, so the sending is a job."""

    def __init__(
        self,
        db: Database,
        matrix: MatrixClient,
        shop: Shop,
        settings: AdvisersSettings,
        replies: Sequence[CannedLike],
    ) -> None:
        self.db = db
        self.matrix = matrix
        self.shop = shop
        self.settings = settings
        self.replies = list(replies)

    def command(self, ctx: CommandContext, parsed: ParsedCommand[CommandHandler]) -> None:
        name = parsed.optional_value("name", str)
        if name is None:
            # The list helps in any room, the lobby included.
            ctx.reply(*canned_listing(self.replies, self.settings.locale, self._prefix))
            return
        conversation = ctx.customer_conversation()
        canned = find_canned(self.replies, name)
        if canned is None:
            raise UserError(unknown_canned(name, self.replies))
        enqueue(
            ctx.tx,
            kinds.ADVISERS_CANNED,
            conversation_key(conversation.id),
            {
                "conversation_id": conversation.id,
                "name": canned.name,
                "sender": ctx.sender,
                "room_id": ctx.room_id,
                "event_id": ctx.event_id,
            },
            ctx.event_id,
        )

    @property
    def _prefix(self) -> str:
        return self.settings.command_prefix

    @handles(kinds.ADVISERS_CANNED)
    async def send(self, job: Job) -> Finish | None:
        p = job.payload
        room, event_id, conversation_id = p["room_id"], p["event_id"], p["conversation_id"]
        canned = find_canned(self.replies, p["name"])
        customer = await self.db.read(context_db.customer_of, conversation_id)
        if customer is None:
            return None  # erased meanwhile
        if canned is None:
            # The config changed between the command and now (a restart).
            gone = unknown_canned(p["name"], self.replies)

            def refuse(tx: Tx) -> None:
                notices.notice(tx, room, "⛔ " + gone, f"canned:{event_id}", reply_to=event_id)

            return refuse
        adviser = await self.display_name(room, p["sender"])
        text = render_canned(
            canned,
            self.settings.locale,
            customer_name=customer[1],
            adviser_name=adviser,
            shop_name=self.settings.shop_name,
        )

        def finish(tx: Tx) -> None:
            conversation = tx.orm.get(Conversation, conversation_id)
            if conversation is None:
                return
            sender = p["sender"]
            if not may_answer(conversation.assignee, sender, self.settings.others_may_answer):
                # The same rule as for typed messages (hub.matrix.dispatcher).
                refusal = _(
                    "{sender} does not have this conversation ({assignee} has it): their "
                    "messages do not reach the customer."
                ).format(sender=sender, assignee=conversation.assignee)
                notices.notice(tx, room, "⛔ " + refusal, f"canned:{event_id}", reply_to=event_id)
                return
            self.shop.tell_customer(
                tx,
                conversation,
                text,
                f"canned:{event_id}",
                sender_mxid=p["sender"],
                image_url=canned.image,
                image_name=image_filename(canned.image or "", canned.name),
            )
            # The customer's words are what advisers must see: what went out, as it went.
            said = _("Canned reply {name} sent: {text}").format(name=canned.name, text=text)
            if canned.image:
                said += " 🖼"
            notices.notice(tx, room, "💬 " + said, f"canned:{event_id}", reply_to=event_id)

        return finish

    async def display_name(self, room_id: str, mxid: str) -> str:
        """The adviser's name as the room shows it, else their profile's, else the MXID's
        localpart (never their full ID in a customer's message)."""
        try:
            member = await self.matrix.room_state(room_id, "m.room.member", mxid)
        except MatrixError as exc:
            if exc.status != 403:
                raise
            member = None
        name = member.get("displayname") if member else None
        if not isinstance(name, str) or not name.strip():
            name = await self.matrix.display_name(mxid)
        return (name or mxid[1:].split(":", 1)[0]).strip()

    def specs(self) -> list[CommandSpec[CommandHandler]]:
        return [
            CommandSpec(
                "t",
                self.command,
                args=(WordArg("name", optional=True),),
                help=N_("List the canned replies, or send one to the customer"),
            )
        ]
