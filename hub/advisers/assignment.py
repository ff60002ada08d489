"""Who has a conversation: the advisers' commands (`!claim`, `!assign`, `!unassign`,
`!handover`, `!close`, `!available`, `!unavailable`), automatic assignment of new and
reopened conversations (a hook of the store path, hub.db.inbound), and the requeue timer
(hub.scheduler.runner fires it) that takes a conversation back from an assignee who has not
answered in time.

Decisions are pure (hub.advisers.routing); the changes are units of work in
hub.db.assignments, which also refresh the lobby and queue the room's label.

Availability is set by command only: presence would be the natural source, but homeservers
often run with it off (the test Synapse does), and an adviser who is online may still not
want new conversations.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from hub.advisers import routing
from hub.config.advisers import RoutingConfig
from hub.core.bot import CommandContext, CommandHandler
from hub.core.commands import CommandSpec, ParsedCommand, RestArg, WordArg
from hub.db import assignments, notices, timers
from hub.db.models import Conversation, Message, utcnow
from hub.errors import UserError
from hub.i18n import N_, _

if TYPE_CHECKING:
    from hub.db.database import Tx
    from hub.db.inbound import InboundPolicy

log = logging.getLogger(__name__)

Parsed = ParsedCommand[CommandHandler]


def mention_html(mxid: str) -> str:
    """A user pill: clients show the name and notify the user."""
    return f'<a href="https://matrix.to/#/{html.escape(mxid)}">{html.escape(mxid)}</a>'


@dataclass
class Assignment:
    routing: RoutingConfig
    advisers: list[str]

    # -- who --------------------------------------------------------------------------

    def _adviser(self, typed: str) -> str:
        """A configured adviser from what was typed: the Matrix ID, or its localpart with or
        without the @ (clients turn a typed @name into a pill whose text is the name)."""
        typed = typed.strip()
        if typed in self.advisers:
            return typed
        local = typed.lstrip("@").partition(":")[0].casefold()
        if ":" not in typed:
            found = [a for a in self.advisers if a[1:].partition(":")[0].casefold() == local]
            if len(found) == 1:
                return found[0]
        raise UserError(
            _("{who} is not one of the shop's advisers; they are: {advisers}").format(
                who=typed, advisers=", ".join(self.advisers) or "—"
            )
        )

    def _route(self, tx: Tx, conversation_id: int, key: str, exclude: tuple[str, ...] = ()) -> None:
        """Give the conversation to the next adviser (auto_assign), else leave it to the
        lobby."""
        chosen = None
        if self.routing.auto_assign:
            states = assignments.adviser_states(tx, self.advisers)
            chosen = routing.next_assignee(
                self.advisers, states, self.routing.max_open_per_adviser, exclude
            )
        if chosen is None:
            assignments.entered_lobby(tx, conversation_id)
            return
        assignments.assign(tx, conversation_id, chosen, self.routing.requeue_after_minutes)
        notices.conversation_notice(
            tx,
            conversation_id,
            _("👤 Assigned to {adviser}.").format(adviser=chosen),
            f"assigned:{key}",
            status="assignment",
        )

    # -- a customer's message ---------------------------------------------------------

    def after_message(
        self,
        tx: Tx,
        policy: InboundPolicy,
        message: Message,
        conversation: Conversation | None,
        last_inbound_at: datetime,
    ) -> None:
        status = conversation.status if conversation is not None else None
        if not routing.enters_routing(status):
            return
        cid = message.conversation_id
        key = f"{cid}:{message.id}"
        if status == routing.CLOSED:
            # Read again, locked: a message or a !claim in another transaction may have
            # reopened it since the store read it (several hub processes on PostgreSQL).
            if assignments.for_update(tx, cid).status != routing.CLOSED:
                return
            assignments.reopen(tx, cid)
            notices.conversation_notice(
                tx, cid, _("↩️ The customer wrote again: the conversation is open."), f"reopen:{key}"
            )
        self._route(tx, cid, key)

    # -- the requeue timer ------------------------------------------------------------

    def fire(self, tx: Tx, timer_id: int) -> bool | None:
        """Run a requeue timer; None when the timer is of another kind (not ours to fire),
        False when it was not pending or not due."""
        if assignments.timer_kind(tx, timer_id) != assignments.REQUEUE:
            return None
        now = utcnow()
        timer = timers.claim(tx, timer_id, now)
        if timer is None:
            return False
        if timer.conversation_id is None or timer.payload is None:
            return True
        conversation = assignments.for_update(tx, timer.conversation_id)
        planned = routing.Assignment(
            timer.payload.get("assignee"),
            datetime.fromisoformat(timer.payload["assigned_at"]),
        )
        current = routing.Assignment(
            conversation.assignee, conversation.assigned_at, conversation.status
        )
        minutes = self.routing.requeue_after_minutes
        if not routing.should_requeue(
            current, planned, conversation.last_adviser_reply_at, now, minutes
        ):
            return True
        waited = conversation.assignee
        assert waited is not None
        assignments.unassign(tx, conversation.id)
        log.info("conversation %s requeued: %s did not answer", conversation.id, waited)
        notices.conversation_notice(
            tx,
            conversation.id,
            _("⏰ {adviser} has not answered for {minutes} minutes: back in the lobby.").format(
                adviser=waited, minutes=minutes
            ),
            f"requeued:{timer.id}",
        )
        self._route(tx, conversation.id, f"requeue:{timer.id}", exclude=(waited,))
        return True

    # -- commands -----------------------------------------------------------------------

    def claim(self, ctx: CommandContext, parsed: Parsed) -> None:
        cid = ctx.customer_conversation().id
        current = assignments.for_update(ctx.tx, cid)
        if current.assignee == ctx.sender and current.status == routing.OPEN:
            ctx.reply(_("You have this conversation already."))
            return
        change = assignments.assign(ctx.tx, cid, ctx.sender, self.routing.requeue_after_minutes)
        if change.previous is not None and change.previous != ctx.sender:
            if change.previous_status == routing.CLOSED:
                ctx.reply(_("You have this conversation now; it is open again."))
                return
            ctx.reply(
                _("You have this conversation now (taken over from {previous}).").format(
                    previous=change.previous
                )
            )
            return
        ctx.reply(_("You have this conversation now."))

    def assign(self, ctx: CommandContext, parsed: Parsed) -> None:
        cid = ctx.customer_conversation().id
        adviser = self._adviser(parsed.value("adviser", str))
        current = assignments.for_update(ctx.tx, cid)
        if current.assignee == adviser and current.status == routing.OPEN:
            raise UserError(_("{adviser} has this conversation already.").format(adviser=adviser))
        assignments.assign(ctx.tx, cid, adviser, self.routing.requeue_after_minutes)
        ctx.reply(
            _("👤 Assigned to {adviser}.").format(adviser=adviser),
            html.escape(_("👤 Assigned to {adviser}.")).format(adviser=mention_html(adviser)),
        )

    def unassign(self, ctx: CommandContext, parsed: Parsed) -> None:
        cid = ctx.customer_conversation().id
        current = assignments.for_update(ctx.tx, cid)
        if current.assignee is None:
            raise UserError(_("Nobody has this conversation: it is in the lobby already."))
        if current.status == routing.CLOSED:
            raise UserError(_("This conversation is closed."))
        change = assignments.unassign(ctx.tx, cid)
        ctx.reply(
            _("Back in the lobby: nobody has this conversation now (it was {previous}'s).").format(
                previous=change.previous
            )
        )

    def handover(self, ctx: CommandContext, parsed: Parsed) -> None:
        cid = ctx.customer_conversation().id
        adviser = self._adviser(parsed.value("adviser", str))
        note = (parsed.optional_value("note", str) or "").strip()
        current = assignments.for_update(ctx.tx, cid)
        if current.assignee == adviser and current.status == routing.OPEN:
            raise UserError(_("{adviser} has this conversation already.").format(adviser=adviser))
        assignments.assign(ctx.tx, cid, adviser, self.routing.requeue_after_minutes)
        if note:
            text = _("🤝 {adviser}, {sender} hands this conversation over to you: {note}")
        else:
            text = _("🤝 {adviser}, {sender} hands this conversation over to you.")
        body = text.format(adviser=adviser, sender=ctx.sender, note=note)
        formatted = html.escape(text).format(
            adviser=mention_html(adviser),
            sender=html.escape(ctx.sender),
            note=html.escape(note),
        )
        ctx.reply(body, formatted)

    def close(self, ctx: CommandContext, parsed: Parsed) -> None:
        cid = ctx.customer_conversation().id
        current = assignments.for_update(ctx.tx, cid)
        if current.status == routing.CLOSED:
            raise UserError(_("This conversation is closed already."))
        assignments.close(ctx.tx, cid)
        ctx.reply(_("Conversation closed. It opens again when the customer writes."))

    def available(self, ctx: CommandContext, parsed: Parsed) -> None:
        assignments.set_available(ctx.tx, ctx.sender, True)
        ctx.reply(_("You are available: new conversations may be assigned to you."))

    def unavailable(self, ctx: CommandContext, parsed: Parsed) -> None:
        assignments.set_available(ctx.tx, ctx.sender, False)
        ctx.reply(
            _(
                "You are unavailable: no new conversations are assigned to you automatically "
                "(the ones you have stay yours) until you send !available."
            )
        )

    def specs(self) -> list[CommandSpec[CommandHandler]]:
        return [
            CommandSpec(
                "claim", self.claim, help=N_("Take this conversation (from whoever has it)")
            ),
            CommandSpec(
                "assign",
                self.assign,
                args=(WordArg("adviser", metavar="@ADVISER"),),
                help=N_("Give this conversation to an adviser"),
            ),
            CommandSpec(
                "unassign", self.unassign, help=N_("Put this conversation back into the lobby")
            ),
            CommandSpec(
                "handover",
                self.handover,
                args=(
                    WordArg("adviser", metavar="@ADVISER"),
                    RestArg("note", optional=True, metavar="NOTE"),
                ),
                help=N_("Hand this conversation over to an adviser, with a note for them"),
            ),
            CommandSpec(
                "close", self.close, help=N_("Close this conversation (the customer reopens it)")
            ),
            CommandSpec(
                "available",
                self.available,
                help=N_("Get new conversations assigned automatically again"),
            ),
            CommandSpec(
                "unavailable",
                self.unavailable,
                help=N_("Get no new conversations automatically (you keep yours)"),
            ),
        ]
