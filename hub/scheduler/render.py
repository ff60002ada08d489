"""The bot's words about time, in the shop's language: holding replies, greetings, "we're
back", the schedule for `!hours`. Texts set in the config win over the catalogue's; dates and
times are formatted by Babel (CLDR) for the shop's locale ("Montag, 9:00 Uhr")."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from babel.dates import format_date, format_datetime, format_time

from hub.config.hours import GreetingConfig, HoldingConfig, RepliesConfig
from hub.i18n import N_, _, current_locale
from hub.scheduler.hours import Interval, Schedule
from hub.scheduler.policy import Hold, local_day

# A Babel date pattern per language: the catalogue holds the shop's ("EEEE, H:mm 'Uhr'").
OPENING_PATTERN = N_("EEEE, h:mm a")
# The same a week or more ahead, where the weekday alone would be ambiguous.
OPENING_DATE_PATTERN = N_("EEEE, MMMM d, h:mm a")
HOLDING = N_(
    "Thank you for your message! Our shop is closed right now. Our advisers will answer "
    "you from {next_opening}."
)
CLOSED_DAY = N_(
    "Thank you for your message! We are closed today. Our advisers will answer you from "
    "{next_opening}."
)
AWAY = N_("Thank you for your message! Your adviser will answer you from {next_opening}.")
NO_OPENING = N_("Thank you for your message! Our advisers will answer you as soon as they can.")
WINDOW_NOTE = N_(
    "This messenger only lets us answer within 24 hours of your last message: please tap "
    "“{button}” when you read this after {next_opening}, and we will answer you here."
)
WINDOW_BUTTON = N_("I'm here")
GREETING = N_("Hello and welcome to {shop}! An adviser will be with you shortly.")
BACK = N_("{shop} is open again: an adviser will answer you shortly.")


_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")


def fill(template: str, **values: object) -> str:
    """Fill {placeholders}; unknown ones become empty and any other brace stays as it is
    (":-}" in an adviser's away text), never an error: this runs while a customer's
    message is stored."""
    text = _PLACEHOLDER.sub(lambda m: str(values.get(m[1], "")), template)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def opening(moment: datetime, schedule: Schedule, now: datetime | None = None) -> str:
    """A moment as people say it: "Montag, 9:00 Uhr", "Monday, 9:00 AM"; with the date
    when it is six days or more after `now` ("Montag, 11. Januar, 9:00 Uhr")."""
    local = moment.astimezone(schedule.timezone)
    far = now is not None and moment - now >= timedelta(days=6)
    pattern = _(OPENING_DATE_PATTERN if far else OPENING_PATTERN)
    return format_datetime(local, pattern, locale=current_locale())


def holding_text(
    config: HoldingConfig, hold: Hold, schedule: Schedule, shop: str, now: datetime | None = None
) -> str:
    if hold.next_opening is None:
        template = config.text or _(NO_OPENING)
    elif hold.kind == "closed_day":
        template = config.closed_day_text or config.text or _(CLOSED_DAY)
    elif hold.kind == "away":
        template = _(AWAY)
    else:
        template = config.text or _(HOLDING)
    when = opening(hold.next_opening, schedule, now) if hold.next_opening else ""
    text = fill(template, next_opening=when, shop=shop, holiday=hold.holiday or "")
    return text + _window_note(config, hold, when, shop)


def _window_note(config: HoldingConfig, hold: Hold, when: str, shop: str) -> str:
    if hold.window_closes is None or hold.next_opening is None:
        return ""
    note = config.window_note or _(WINDOW_NOTE)
    return "\n\n" + fill(note, button=window_button(config), next_opening=when, shop=shop)


def away_text(
    config: HoldingConfig,
    template: str | None,
    hold: Hold,
    schedule: Schedule,
    shop: str,
    now: datetime | None = None,
) -> str:
    """An adviser's away text (`!away … TEXT`), or the catalogue's; with the reply-window
    note, like a holding reply, when the window closes before the away ends."""
    when = opening(hold.next_opening, schedule, now) if hold.next_opening else ""
    text = fill(template or _(AWAY), next_opening=when, shop=shop)
    return text + _window_note(config, hold, when, shop)


def window_button(config: HoldingConfig) -> str:
    return config.window_button or _(WINDOW_BUTTON)


def greeting_text(config: GreetingConfig, channel: str, shop: str) -> str:
    template = config.by_channel.get(channel) or config.text or _(GREETING)
    return fill(template, shop=shop)


def back_text(config: RepliesConfig, shop: str) -> str:
    return fill(config.back.text or _(BACK), shop=shop)


def _intervals(intervals: tuple[Interval, ...]) -> str:
    if not intervals:
        return _("closed")
    locale = current_locale()

    def clock(minute: int) -> str:
        if minute >= 24 * 60:
            return "24:00"
        return format_time(datetime(2000, 1, 1, minute // 60, minute % 60), "short", locale=locale)

    return ", ".join(f"{clock(i.start)}–{clock(i.end)}" for i in intervals)


def week(schedule: Schedule, now: datetime, days: int = 7) -> list[str]:
    """The coming days' hours, a line each ("Montag, 7. Dezember: 09:00–13:00, 14:00–18:00")."""
    locale = current_locale()
    today = local_day(now, schedule)
    lines = []
    for n in range(days):
        day = today + timedelta(days=n)
        name = format_date(day, _("EEEE, MMMM d"), locale=locale)
        hours = _intervals(schedule.intervals_on(day))
        holiday = schedule.holiday_name(day)
        lines.append(f"{name}: {hours}" + (f" ({holiday})" if holiday else ""))
    return lines


def status_line(schedule: Schedule, now: datetime, configured: bool) -> str:
    """Open or closed now, and the next change."""
    if not configured:
        return _("No opening hours are configured: the shop counts as always open.")
    if schedule.is_open(now):
        closing = schedule.next_closing(now)
        if closing is None:
            return _("Open now.")
        return _("Open now, until {moment}.").format(moment=opening(closing, schedule, now))
    next_opening = schedule.next_opening(now)
    if next_opening is None:
        return _("Closed, and no opening within the next year.")
    return _("Closed now; opens {moment}.").format(moment=opening(next_opening, schedule, now))
