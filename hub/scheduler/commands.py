"""Advisers' commands about time: `!hours`, `!away`, `!schedule`.

`!schedule WHEN TEXT` stores a timer (hub.db.timers) that sends TEXT to the customer at WHEN,
in their channel, through the same queue as an adviser's reply; a WHEN in the past, one that
cannot be read, or an empty text is refused with ⛔ and nothing is stored.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hub.core.bot import CommandContext, CommandHandler
from hub.core.commands import CommandSpec, ParsedCommand, RestArg, WordArg
from hub.db import conversations, timers
from hub.db.models import utcnow
from hub.errors import UserError
from hub.i18n import N_, _
from hub.scheduler import render
from hub.scheduler.automations import Automations
from hub.scheduler.hours import Schedule
from hub.scheduler.policy import local_day
from hub.scheduler.when import WhenError, parse_when

Parsed = ParsedCommand[CommandHandler]

# "!away until …" / "!away bis …"
UNTIL_WORDS = ("until", "bis")
OFF_WORDS = ("off", "aus", "ende", "end")
MAX_TEXT = 4000  # a scheduled message is one chat message


class SchedulerCommands:
    def __init__(self, automations: Automations) -> None:
        self.automations = automations

    @property
    def _schedule(self) -> Schedule:
        return self.automations.schedule

    def _when(self, text: str, now: datetime) -> tuple[datetime, str]:
        try:
            return parse_when(text, now, self._schedule.timezone)
        except WhenError as exc:
            raise UserError(str(exc)) from None

    # -- !hours --------------------------------------------------------------------------

    def hours(self, ctx: CommandContext, parsed: Parsed) -> None:
        now = utcnow()
        configured = self.automations.hours.configured
        lines = [render.status_line(self._schedule, now, configured)]
        if configured:
            lines += ["", *render.week(self._schedule, now)]
        ctx.reply("\n".join(lines))

    # -- !away -----------------------------------------------------------------------------

    def away(self, ctx: CommandContext, parsed: Parsed) -> None:
        conversation = ctx.customer_conversation()
        rest = (parsed.optional_value("rest", str) or "").strip()
        words = rest.split(maxsplit=1)
        if words and words[0].casefold() in OFF_WORDS and len(words) == 1:
            conversations.set_meta(ctx.tx, conversation.id, away_until=None, away_text=None)
            ctx.reply(_("Away ended: this conversation gets the usual replies again."))
            return
        now = utcnow()
        if words and words[0].casefold() in UNTIL_WORDS:
            until, text = self._when(words[1] if len(words) > 1 else "", now)
        else:
            until, text = self._default_until(now), rest
        conversations.set_meta(
            ctx.tx,
            conversation.id,
            away_until=until.isoformat(),
            away_text=text[:MAX_TEXT] or None,
            holding_for=None,
        )
        when = render.opening(until, self._schedule, now)
        ctx.reply(
            _(
                "Away until {when}: a customer who writes before then gets one answer saying "
                "so{custom}. End it with !away off."
            ).format(when=when, custom=_(" (your text)") if text else "")
        )

    def _default_until(self, now: datetime) -> datetime:
        """Without a WHEN: until the shop's first opening on a later day (tomorrow morning,
        after the lunch break too), or a day without opening hours."""
        schedule = self._schedule
        if not self.automations.hours.configured:
            return now + timedelta(days=1)
        today = local_day(now, schedule)
        opening = schedule.next_opening(now)
        while opening is not None and local_day(opening, schedule) == today:
            closing = schedule.next_closing(opening)
            opening = schedule.next_opening(closing) if closing is not None else None
        return opening or now + timedelta(days=1)

    # -- !schedule ------------------------------------------------------------------------

    def schedule(self, ctx: CommandContext, parsed: Parsed) -> None:
        conversation = ctx.customer_conversation()
        now = utcnow()
        due, text = self._when(parsed.value("when_text", str), now)
        if not text:
            raise UserError(_("What should be sent? Write the text after the time."))
        if len(text) > MAX_TEXT:
            raise UserError(_("The text is too long (at most {n} characters).").format(n=MAX_TEXT))
        timer_id = timers.add(
            ctx.tx,
            timers.SCHEDULED,
            f"scheduled:{ctx.event_id}",
            due,
            conversation_id=conversation.id,
            payload={"text": text},
            created_by=ctx.sender,
        )
        if timer_id is None:  # the same command event, handled again
            return
        answer = _("🕒 Scheduled #{id} for {when}: {text}").format(
            id=timer_id, when=render.opening(due, self._schedule, now), text=text
        )
        if self.automations.hours.configured and not self._schedule.is_open(due):
            answer += "\n" + _("Note: the shop is closed at that time.")
        ctx.reply(answer + "\n" + _("Cancel it with !schedule cancel {id}.").format(id=timer_id))

    def schedule_list(self, ctx: CommandContext, parsed: Parsed) -> None:
        conversation = ctx.customer_conversation()
        now = utcnow()
        pending = timers.of_conversation(ctx.tx, conversation.id, timers.SCHEDULED)
        if not pending:
            ctx.reply(_("No scheduled messages in this conversation."))
            return
        lines = [_("Scheduled messages:")]
        for timer in pending:
            text = str((timer.payload or {}).get("text", ""))
            when = render.opening(timer.due_at, self._schedule, now)
            lines.append(f"#{timer.id} · {when} · {timer.created_by or ''}: {text}")
        ctx.reply("\n".join(lines))

    def schedule_cancel(self, ctx: CommandContext, parsed: Parsed) -> None:
        conversation = ctx.customer_conversation()
        raw = parsed.value("id", str).lstrip("#")
        if not raw.isdigit():
            raise UserError(_("«{id}» is not a number; see !schedule list.").format(id=raw))
        if not timers.cancel(ctx.tx, int(raw), conversation.id, kind=timers.SCHEDULED):
            raise UserError(
                _("No pending scheduled message #{id} in this conversation.").format(id=raw)
            )
        ctx.reply(_("Scheduled message #{id} cancelled.").format(id=raw))

    def specs(self) -> list[CommandSpec[CommandHandler]]:
        return [
            CommandSpec("hours", self.hours, help=N_("Show the opening hours, open or closed now")),
            CommandSpec(
                "away",
                self.away,
                args=(RestArg("rest", optional=True, metavar="[until WHEN] [TEXT] | off"),),
                help=N_("Answer this customer that you are away (until WHEN), or end it"),
            ),
            CommandSpec(
                "schedule",
                self.schedule,
                args=(RestArg("when_text", metavar="WHEN TEXT"),),
                help=N_("Send TEXT to the customer at WHEN (mo 9:00, in 2h, 2026-12-01 10:00)"),
            ),
            CommandSpec(
                "schedule list",
                self.schedule_list,
                help=N_("List this conversation's scheduled messages"),
            ),
            CommandSpec(
                "schedule cancel",
                self.schedule_cancel,
                args=(WordArg("id", metavar="ID"),),
                help=N_("Cancel a scheduled message"),
            ),
        ]
