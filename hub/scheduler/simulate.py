"""`hub hours simulate`: what the hub would do with a customer's message at a given moment,
so an admin can check the hours and replies of a config before it goes live. Pure: the
same decision (hub.scheduler.policy) and texts (hub.scheduler.render) the hub uses.

The report's frame is English (the command line is for whoever runs the hub); the texts the
customer would get are in the shop's language.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from hub.config.hours import HoursConfig, MissedConfig, RepliesConfig
from hub.scheduler import render
from hub.scheduler.policy import ConversationState, ReplyRules, decide


@dataclass(frozen=True)
class Situation:
    moment: datetime
    channel: str
    reply_window: timedelta | None
    new: bool = True  # the customer's first message
    adviser_replied_minutes_ago: int | None = None


def parse_moment(text: str, timezone: str) -> datetime:
    """ "2026-12-26 22:10" in the shop's zone, or an ISO moment with its own offset."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return moment


def simulate(
    situation: Situation,
    hours: HoursConfig,
    replies: RepliesConfig,
    missed: MissedConfig,
    timezone: str,
    shop: str,
    holidays: Mapping[date, str] | None = None,
) -> list[str]:
    schedule = hours.schedule(timezone, holidays)
    now = situation.moment
    ago = situation.adviser_replied_minutes_ago
    rules = ReplyRules(
        schedule=schedule,
        hours_configured=hours.configured,
        greeting=replies.greeting.enabled,
        holding=replies.holding.enabled,
        quiet_after_reply=timedelta(minutes=replies.holding.quiet_after_reply_minutes),
        back=replies.back.enabled,
        missed_after_minutes=missed.after_minutes,
    )
    state = ConversationState(
        new=situation.new,
        last_adviser_reply_at=now - timedelta(minutes=ago) if ago is not None else None,
        holding_for=None,
        away_until=None,
        reply_window=situation.reply_window,
        last_inbound_at=now,
        missed_pending=False,
    )
    decision = decide(now, rules, state)
    local = now.astimezone(schedule.timezone)
    lines = [
        f"Moment:   {local:%A %Y-%m-%d %H:%M %Z} ({timezone})",
        f"Channel:  {situation.channel}"
        + (f" (reply window {_hours(situation.reply_window)})" if situation.reply_window else ""),
        f"Shop:     {render.status_line(schedule, now, hours.configured)}",
    ]
    if decision.greeting:
        text = render.greeting_text(replies.greeting, situation.channel, shop)
        lines += ["", "Greeting (first message of a new conversation):", _indent(text)]
    else:
        lines += ["", "Greeting: none" + ("" if replies.greeting.enabled else " (disabled)")]
    hold = decision.hold
    if hold is None:
        why = _no_hold_reason(now, rules, state)
        lines += ["", f"Holding reply: none ({why})"]
    else:
        text = render.holding_text(replies.holding, hold, schedule, shop, now)
        kind = {"closed": "closed", "closed_day": "closed all day", "away": "away"}[hold.kind]
        lines += ["", f"Holding reply ({kind}; once until the shop opens):", _indent(text)]
        if hold.holiday:
            lines.append(f"Holiday:  {hold.holiday}")
        if hold.window_closes is not None:
            closes = hold.window_closes.astimezone(schedule.timezone)
            lines.append(
                f"Window:   closes {closes:%a %Y-%m-%d %H:%M} before the shop opens: the reply "
                f"offers the button “{render.window_button(replies.holding)}”"
            )
    if decision.back_at is not None:
        back = render.back_text(replies, shop)
        lines += ["", f"At the opening ({render.opening(decision.back_at, schedule, now)}):"]
        lines.append(_indent(back))
    if decision.missed_due is not None:
        due = render.opening(decision.missed_due, schedule, now)
        lines += ["", f"Missed:   counts as missed without an adviser reply by {due}"]
    return lines


def _no_hold_reason(now: datetime, rules: ReplyRules, state: ConversationState) -> str:
    if not rules.hours_configured:
        return "no opening hours configured"
    if not rules.holding:
        return "holding replies are disabled"
    if rules.schedule.is_open(now):
        return "the shop is open"
    return "an adviser answered recently"


def _hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:g} hours"


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
