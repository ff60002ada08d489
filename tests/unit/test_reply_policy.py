"""What the bot does with a customer's message given the time (hub.scheduler.policy) and the
words it uses (hub.scheduler.render), with the clock passed in.

The shop: a paint retailer in Nordrhein-Westfalen, Monday to Saturday 09:00-13:00 and
14:00-18:00, closed on Sundays and public holidays, Christmas Eve 09:00-13:00.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.config.hours import HoldingConfig, HoursConfig, RepliesConfig
from hub.scheduler import render
from hub.scheduler.holiday_dates import holiday_dates
from hub.scheduler.policy import ConversationState, Decision, ReplyRules, decide

BERLIN = ZoneInfo("Europe/Berlin")
WHATSAPP = timedelta(hours=24)
HOURS = HoursConfig.model_validate(
    {
        "weekly": {day: "9-13, 14-18" for day in ("mon", "tue", "wed", "thu", "fri", "sat")},
        "holidays": {"country": "DE", "region": "NW"},
        "special": {"2026-12-24": "9-13"},
    }
)
SCHEDULE = HOURS.schedule("Europe/Berlin", holiday_dates("DE", "NW", "de_DE", range(2025, 2029)))
RULES = ReplyRules(
    schedule=SCHEDULE,
    hours_configured=True,
    greeting=True,
    holding=True,
    quiet_after_reply=timedelta(minutes=10),
    back=True,
    missed_after_minutes=15,
)
FIRST = ConversationState(
    new=True,
    last_adviser_reply_at=None,
    holding_for=None,
    away_until=None,
    reply_window=None,
    last_inbound_at=None,
    missed_pending=False,
)
LATER = replace(FIRST, new=False)


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BERLIN)


def utc(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC) if moment is not None else None


def test_open_hours_greet_a_new_customer_and_watch_for_a_missed_conversation() -> None:
    monday = at(2026, 12, 7, 10, 0)
    decision = decide(monday, RULES, FIRST)
    assert decision == Decision(greeting=True, missed_due=monday + timedelta(minutes=15))
    assert decide(monday, RULES, LATER).greeting is False
    assert decide(monday, replace(RULES, greeting=False), FIRST).greeting is False


def test_sunday_evening_gets_one_holding_reply_for_the_closed_period() -> None:
    sunday = at(2026, 12, 6, 22, 10)
    decision = decide(sunday, RULES, LATER)
    hold = decision.hold
    assert hold is not None
    assert hold.kind == "closed_day"
    assert utc(hold.next_opening) == utc(at(2026, 12, 7, 9, 0))
    assert hold.period == "closed:" + at(2026, 12, 5, 18, 0).isoformat()
    assert decision.back_at == hold.next_opening
    # The once-per-period rule: the same closed period holds no second time...
    again = decide(sunday + timedelta(minutes=5), RULES, replace(LATER, holding_for=hold.period))
    assert again.hold is None
    # ...and Saturday evening is the same period as Sunday night.
    saturday = decide(at(2026, 12, 5, 19, 0), RULES, LATER).hold
    assert saturday is not None and saturday.period == hold.period and saturday.kind == "closed"
    # The next closed period (Monday's lunch break) holds again.
    lunch = decide(at(2026, 12, 7, 13, 30), RULES, replace(LATER, holding_for=hold.period))
    assert lunch.hold is not None and lunch.hold.period != hold.period
    assert utc(lunch.hold.next_opening) == utc(at(2026, 12, 7, 14, 0))


def test_no_holding_reply_right_after_an_adviser_answered() -> None:
    sunday = at(2026, 12, 6, 11, 0)
    recent = replace(LATER, last_adviser_reply_at=sunday - timedelta(minutes=9))
    assert decide(sunday, RULES, recent).hold is None
    older = replace(LATER, last_adviser_reply_at=sunday - timedelta(minutes=11))
    assert decide(sunday, RULES, older).hold is not None


def test_without_hours_or_with_holding_off_there_is_no_holding_reply() -> None:
    sunday = at(2026, 12, 6, 11, 0)
    always = replace(
        RULES, schedule=HoursConfig().schedule("Europe/Berlin"), hours_configured=False
    )
    assert decide(sunday, always, LATER).hold is None
    assert decide(sunday, replace(RULES, holding=False), LATER).hold is None


def test_away_answers_at_any_hour_once_per_away_period() -> None:
    tuesday = at(2026, 12, 8, 10, 0)  # open
    until = at(2026, 12, 10, 9, 0)
    away = replace(LATER, away_until=until)
    hold = decide(tuesday, RULES, away).hold
    assert hold is not None and hold.kind == "away" and hold.next_opening == until
    assert decide(tuesday, RULES, replace(away, holding_for=hold.period)).hold is None
    assert decide(tuesday, RULES, replace(away, holding_for=hold.period)).back_at is None
    assert decide(at(2026, 12, 10, 10, 0), RULES, away).hold is None  # over


def test_window_planner_warns_only_when_the_window_closes_before_the_opening() -> None:
    whatsapp = replace(LATER, reply_window=WHATSAPP)
    saturday = at(2026, 12, 5, 19, 0)  # opens Monday 9:00, the window closes Sunday 19:00
    hold = decide(saturday, RULES, whatsapp).hold
    assert hold is not None and utc(hold.window_closes) == utc(saturday + WHATSAPP)
    friday = at(2026, 12, 4, 19, 0)  # opens Saturday 9:00: within the window
    hold = decide(friday, RULES, whatsapp).hold
    assert hold is not None and hold.window_closes is None
    telegram = decide(saturday, RULES, LATER).hold  # no reply window
    assert telegram is not None and telegram.window_closes is None
    # Delivered late: the window counts from when the customer wrote.
    late = replace(whatsapp, last_inbound_at=friday)
    hold = decide(saturday, RULES, late).hold
    assert hold is not None and utc(hold.window_closes) == utc(friday + WHATSAPP)


def test_a_holiday_on_a_monday_moves_the_opening_and_the_window() -> None:
    # Easter Monday 2027 (29 March) is a public holiday; Sunday 28 March is also the spring
    # DST change: the shop reopens on Tuesday 09:00 CEST.
    sunday = at(2027, 3, 28, 20, 0)
    hold = decide(sunday, RULES, replace(LATER, reply_window=WHATSAPP)).hold
    assert hold is not None
    assert utc(hold.next_opening) == datetime(2027, 3, 30, 7, 0, tzinfo=UTC)
    assert hold.window_closes is not None  # Monday 20:00 comes before Tuesday 09:00
    monday = decide(at(2027, 3, 29, 10, 0), RULES, LATER).hold
    assert monday is not None and monday.kind == "closed_day" and monday.holiday == "Ostermontag"


def test_autumn_dst_change_keeps_the_opening_on_the_wall_clock() -> None:
    sunday = at(2026, 10, 25, 12, 0)  # CEST ended at 03:00 this morning
    hold = decide(sunday, RULES, LATER).hold
    assert hold is not None
    assert utc(hold.next_opening) == datetime(2026, 10, 26, 8, 0, tzinfo=UTC)  # 09:00 CET


def test_missed_time_counts_opening_minutes_only() -> None:
    saturday = at(2026, 12, 5, 17, 55)  # 5 open minutes left, then Sunday closed
    due = decide(saturday, RULES, LATER).missed_due
    assert utc(due) == utc(at(2026, 12, 7, 9, 10))
    midnight = decide(at(2026, 12, 8, 0, 5), RULES, LATER).missed_due
    assert utc(midnight) == utc(at(2026, 12, 8, 9, 15))
    assert decide(saturday, RULES, replace(LATER, missed_pending=True)).missed_due is None
    assert decide(saturday, replace(RULES, missed_after_minutes=0), LATER).missed_due is None


def test_christmas_eve_closes_at_one() -> None:
    hold = decide(at(2026, 12, 24, 15, 0), RULES, LATER).hold
    # 25 and 26 December are holidays, the 27th a Sunday: the shop reopens on Monday the 28th.
    assert hold is not None and utc(hold.next_opening) == utc(at(2026, 12, 28, 9, 0))


# --- the words --------------------------------------------------------------------------------


def test_holding_text_in_german_names_the_opening_as_people_say_it(
    shop_language: Callable[[str], None],
) -> None:
    shop_language("de_DE")
    sunday = decide(at(2026, 12, 6, 22, 10), RULES, replace(LATER, reply_window=WHATSAPP)).hold
    assert sunday is not None and sunday.window_closes is None
    text = render.holding_text(HoldingConfig(), sunday, SCHEDULE, "Farben Müller")
    assert "Heute haben wir geschlossen" in text
    assert "Montag, 9:00\xa0Uhr" in text  # CLDR's no-break space keeps "9:00 Uhr" together
    saturday = decide(at(2026, 12, 5, 19, 0), RULES, replace(LATER, reply_window=WHATSAPP)).hold
    assert saturday is not None and saturday.window_closes is not None
    text = render.holding_text(HoldingConfig(), saturday, SCHEDULE, "Farben Müller")
    assert "Montag, 9:00\xa0Uhr" in text
    assert "„Ich bin da“" in text  # the window note names the button
    assert render.window_button(HoldingConfig()) == "Ich bin da"


def test_holding_text_in_english(shop_language: Callable[[str], None]) -> None:
    shop_language("en_US")
    hold = decide(at(2026, 12, 7, 19, 0), RULES, LATER).hold
    assert hold is not None
    text = render.holding_text(HoldingConfig(), hold, SCHEDULE, "Paint & Co")
    assert text == (
        "Thank you for your message! Our shop is closed right now. Our advisers will answer "
        "you from Tuesday, 9:00 AM."
    )


def test_braces_in_a_text_are_kept_never_an_error() -> None:
    assert render.fill("Bin gleich zurück :-} {0} {:)} {shop}", shop="Farben") == (
        "Bin gleich zurück :-} {0} {:)} Farben"
    )


def test_texts_from_the_config_win_and_unknown_placeholders_stay_empty() -> None:
    hold = decide(at(2026, 12, 6, 22, 10), RULES, LATER).hold
    assert hold is not None
    config = HoldingConfig(
        text="Geschlossen. Ab {next_opening} wieder da.",
        closed_day_text="Heute ist {holiday}Sonntag, {shop} öffnet {next_opening}. {nonsense}",
    )
    text = render.holding_text(config, hold, SCHEDULE, "Farben Müller")
    assert text.startswith("Heute ist Sonntag, Farben Müller öffnet ")
    assert "{" not in text
    greeting = RepliesConfig.model_validate(
        {"greeting": {"text": "Hallo von {shop}!", "by_channel": {"whatsapp": "Moin! {shop}"}}}
    ).greeting
    assert render.greeting_text(greeting, "whatsapp", "Farben Müller") == "Moin! Farben Müller"
    assert render.greeting_text(greeting, "telegram", "Farben Müller") == "Hallo von Farben Müller!"


def test_hours_listing_marks_holidays_and_closed_days(
    shop_language: Callable[[str], None],
) -> None:
    shop_language("de_DE")
    lines = render.week(SCHEDULE, at(2026, 12, 24, 8, 0), days=4)
    assert lines[0] == "Donnerstag, 24. Dezember: 09:00–13:00"
    assert lines[1] == "Freitag, 25. Dezember: geschlossen (Erster Weihnachtstag)"
    assert lines[3] == "Sonntag, 27. Dezember: geschlossen"
    status = render.status_line(SCHEDULE, at(2026, 12, 24, 14, 0), configured=True)
    assert status == "Jetzt geschlossen; öffnet wieder am Montag, 9:00\xa0Uhr."
    # A week or more ahead (company holidays), the date is named too.
    opening = at(2027, 1, 11, 9, 0)
    far = render.opening(opening, SCHEDULE, now=opening - timedelta(days=8))
    assert far == "Montag, 11. Januar, 9:00\xa0Uhr"


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        (at(2026, 12, 7, 8, 59), False),
        (at(2026, 12, 7, 9, 0), True),
        (at(2026, 12, 7, 13, 0), False),
    ],
)
def test_decision_follows_the_schedule_at_the_edges(moment: datetime, is_open: bool) -> None:
    assert (decide(moment, RULES, LATER).hold is None) is is_open
