"""What the bot does with a customer's message, given the time: greet, hold, warn about the
reply window, plan the "we're back" message and the missed-conversation check. Pure: the
clock, the schedule and the conversation's state are passed in; the store path
(hub.db.replies) applies the decision in the message's transaction.

The bot greets and holds; a human answers. A holding reply goes out at most once per closed
period and conversation, never while an adviser has just answered, and a conversation an
adviser marked away (`!away`) gets the away text instead, at any hour, once per away period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from hub.scheduler.hours import Schedule

HoldKind = Literal["closed", "closed_day", "away"]


@dataclass(frozen=True)
class ReplyRules:
    schedule: Schedule
    hours_configured: bool  # without hours the shop counts as always open
    greeting: bool
    holding: bool
    quiet_after_reply: timedelta
    back: bool
    missed_after_minutes: int  # 0: conversations are not watched


@dataclass(frozen=True)
class ConversationState:
    new: bool  # this is the customer's first message of a new conversation
    last_adviser_reply_at: datetime | None
    holding_for: str | None  # the period key a holding reply last went out for
    away_until: datetime | None
    reply_window: timedelta | None  # the channel's (WhatsApp: 24 h; None: no window)
    # When the customer last wrote (the window counts from there, not from when we heard of
    # it: providers redeliver late); None: now.
    last_inbound_at: datetime | None
    missed_pending: bool  # a missed-conversation check is already armed


@dataclass(frozen=True)
class Hold:
    kind: HoldKind
    period: str  # the once-per-period key
    next_opening: datetime | None
    holiday: str | None  # the name of today's holiday, on a closed day
    # The channel's reply window closes before the shop reopens: the reply says so and
    # offers a one-tap button (a tap reopens the window).
    window_closes: datetime | None


@dataclass(frozen=True)
class Decision:
    greeting: bool = False
    hold: Hold | None = None
    back_at: datetime | None = None  # "we're back" with the next opening
    missed_due: datetime | None = None  # when to check whether an adviser answered


def decide(now: datetime, rules: ReplyRules, state: ConversationState) -> Decision:
    hold = _hold(now, rules, state)
    back_at = None
    if hold is not None and hold.kind != "away" and rules.back:
        back_at = hold.next_opening
    return Decision(
        greeting=rules.greeting and state.new,
        hold=hold,
        back_at=back_at,
        missed_due=_missed_due(now, rules, state),
    )


def _hold(now: datetime, rules: ReplyRules, state: ConversationState) -> Hold | None:
    if state.away_until is not None and now < state.away_until:
        period = f"away:{state.away_until.isoformat()}"
        if state.holding_for == period:
            return None
        return Hold("away", period, state.away_until, None, _window(now, state, state.away_until))
    if not (rules.holding and rules.hours_configured) or rules.schedule.is_open(now):
        return None
    last = state.last_adviser_reply_at
    if last is not None and now - last < rules.quiet_after_reply:
        return None  # an adviser is on it, whatever the hours say
    since = rules.schedule.closed_since(now)
    period = f"closed:{since.isoformat() if since else 'always'}"
    if state.holding_for == period:
        return None
    schedule = rules.schedule
    today = local_day(now, schedule)
    opening = schedule.next_opening(now)
    kind: HoldKind = "closed_day" if schedule.is_closed_day(today) else "closed"
    holiday = schedule.holiday_name(today) if kind == "closed_day" else None
    return Hold(kind, period, opening, holiday, _window(now, state, opening))


def _window(now: datetime, state: ConversationState, until: datetime | None) -> datetime | None:
    """When the reply window closes, if that is before `until` (None: it stays open)."""
    if state.reply_window is None:
        return None
    closes = (state.last_inbound_at or now) + state.reply_window
    return closes if until is None or closes < until else None


def _missed_due(now: datetime, rules: ReplyRules, state: ConversationState) -> datetime | None:
    if rules.missed_after_minutes <= 0 or state.missed_pending:
        return None
    if rules.hours_configured:
        return rules.schedule.add_open_minutes(now, rules.missed_after_minutes)
    return now + timedelta(minutes=rules.missed_after_minutes)


def local_day(moment: datetime, schedule: Schedule) -> date:
    return moment.astimezone(schedule.timezone).date()
