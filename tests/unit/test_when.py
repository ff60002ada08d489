"""The WHEN of an adviser's scheduled message: every form, German and English, DST, errors.

"now" is a fixed Sunday evening, 2026-12-06 22:10 in Berlin, unless a test says otherwise.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.scheduler.when import WhenError, parse_when

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 6, 22, 10, tzinfo=BERLIN)  # a Sunday


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, *, fold: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=BERLIN, fold=fold)


def check(text: str, expected: datetime, rest: str = "", now: datetime = NOW) -> None:
    moment, left = parse_when(text, now, BERLIN)
    assert moment.tzinfo is BERLIN
    assert moment.astimezone(UTC) == expected.astimezone(UTC)
    assert moment.utcoffset() == expected.utcoffset()  # the clocks show what we expect
    assert left == rest


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("in 2h", at(2026, 12, 7, 0, 10)),
        ("in 2 h", at(2026, 12, 7, 0, 10)),
        ("in 90 min", at(2026, 12, 6, 23, 40)),
        ("in 90m", at(2026, 12, 6, 23, 40)),
        ("in 90 mins", at(2026, 12, 6, 23, 40)),
        ("in 1 minute", at(2026, 12, 6, 22, 11)),
        ("in 2 Stunden", at(2026, 12, 7, 0, 10)),
        ("in 1 Stunde", at(2026, 12, 6, 23, 10)),
        ("in 2 Std.", at(2026, 12, 7, 0, 10)),
        ("in 2 hours", at(2026, 12, 7, 0, 10)),
        ("in 1 hour", at(2026, 12, 6, 23, 10)),
        ("in 2hrs", at(2026, 12, 7, 0, 10)),
        ("in 30 Minuten", at(2026, 12, 6, 22, 40)),
        ("in 3 Tagen", at(2026, 12, 9, 22, 10)),
        ("in 1 Tag", at(2026, 12, 7, 22, 10)),
        ("in 3 days", at(2026, 12, 9, 22, 10)),
        ("in 1d", at(2026, 12, 7, 22, 10)),
        ("in 2 Wochen", at(2026, 12, 20, 22, 10)),
        ("in 1 week", at(2026, 12, 13, 22, 10)),
        ("in 1h 30min", at(2026, 12, 6, 23, 40)),
        ("in 1 Stunde und 30 Minuten", at(2026, 12, 6, 23, 40)),
        ("in 1 hour, 30 minutes", at(2026, 12, 6, 23, 40)),
        ("in 1 hour and 30 minutes", at(2026, 12, 6, 23, 40)),
        ("in einer Stunde", at(2026, 12, 6, 23, 10)),
        ("in an hour", at(2026, 12, 6, 23, 10)),
        ("in a day", at(2026, 12, 7, 22, 10)),
        ("IN 2H", at(2026, 12, 7, 0, 10)),
    ],
)
def test_relative(text: str, expected: datetime) -> None:
    check(text, expected)
    check(f"{text}  Ihre Farbe ist da ", expected, "Ihre Farbe ist da")


def test_relative_stops_where_the_message_starts() -> None:
    check("in 2h 3 Dosen sind da", at(2026, 12, 7, 0, 10), "3 Dosen sind da")
    check("in 2h and then call", at(2026, 12, 7, 0, 10), "and then call")
    check("in 2h: ruf an", at(2026, 12, 7, 0, 10), "ruf an")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mo 9:00", at(2026, 12, 7, 9)),
        ("Mo 9", at(2026, 12, 7, 9)),
        ("Mo. 9", at(2026, 12, 7, 9)),
        ("Mo, 9", at(2026, 12, 7, 9)),
        ("Montag 9:00", at(2026, 12, 7, 9)),
        ("montag 09:00 Uhr", at(2026, 12, 7, 9)),
        ("Montag um 9 Uhr", at(2026, 12, 7, 9)),
        ("monday 9:00", at(2026, 12, 7, 9)),
        ("monday at 9am", at(2026, 12, 7, 9)),
        ("mon 9am", at(2026, 12, 7, 9)),
        ("MON 9AM", at(2026, 12, 7, 9)),
        ("di 10", at(2026, 12, 8, 10)),
        ("tue 10", at(2026, 12, 8, 10)),
        ("Dienstag 10:30", at(2026, 12, 8, 10, 30)),
        ("mi 10", at(2026, 12, 9, 10)),
        ("wed 10", at(2026, 12, 9, 10)),
        ("do 10", at(2026, 12, 10, 10)),
        ("thu 10", at(2026, 12, 10, 10)),
        ("Donnerstag 10", at(2026, 12, 10, 10)),
        ("fr 10", at(2026, 12, 11, 10)),
        ("fri 10", at(2026, 12, 11, 10)),
        ("sa 10", at(2026, 12, 12, 10)),
        ("sat 10", at(2026, 12, 12, 10)),
        ("Samstag 10", at(2026, 12, 12, 10)),
        ("Sonnabend 10", at(2026, 12, 12, 10)),
        ("so 23:00", at(2026, 12, 6, 23)),  # today: 23:00 is still ahead
        ("sun 23:00", at(2026, 12, 6, 23)),
        ("so 22:10", at(2026, 12, 13, 22, 10)),  # now is not ahead: a week later
        ("so 10", at(2026, 12, 13, 10)),  # already past today: next Sunday
        ("Sonntag 9:30pm", at(2026, 12, 13, 21, 30)),
        ("fr 6:45pm", at(2026, 12, 11, 18, 45)),
        ("fr 9.30", at(2026, 12, 11, 9, 30)),
    ],
)
def test_weekday_and_time(text: str, expected: datetime) -> None:
    check(text, expected)
    check(f"{text} Farbe abholen", expected, "Farbe abholen")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("heute 23:00", at(2026, 12, 6, 23)),
        ("today 23:00", at(2026, 12, 6, 23)),
        ("Heute um 23 Uhr", at(2026, 12, 6, 23)),
        ("morgen 9:00", at(2026, 12, 7, 9)),
        ("Morgen 9", at(2026, 12, 7, 9)),
        ("tomorrow 9:00", at(2026, 12, 7, 9)),
        ("tomorrow at 9am", at(2026, 12, 7, 9)),
        ("übermorgen 9:00", at(2026, 12, 8, 9)),
        ("Übermorgen 9 Uhr", at(2026, 12, 8, 9)),
        ("uebermorgen 9:00", at(2026, 12, 8, 9)),
        (unicodedata.normalize("NFD", "übermorgen 9:00"), at(2026, 12, 8, 9)),  # macOS input
    ],
)
def test_today_tomorrow_and_the_day_after(text: str, expected: datetime) -> None:
    check(text, expected)
    check(f"{text} bitte anrufen", expected, "bitte anrufen")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-07 10:00", at(2026, 12, 7, 10)),
        ("2026-12-07T10:00", at(2026, 12, 7, 10)),
        ("2027-1-5 9", at(2027, 1, 5, 9)),
        ("2026-12-07 um 10 Uhr", at(2026, 12, 7, 10)),
        ("07.12.2026 10:00", at(2026, 12, 7, 10)),
        ("7.12.2026 10", at(2026, 12, 7, 10)),
        ("01.12.2027 10:00", at(2027, 12, 1, 10)),
        ("01.01.27 10:00", at(2027, 1, 1, 10)),
        ("7.12. 10:00", at(2026, 12, 7, 10)),  # this year: still ahead
        ("1.12. 10:00", at(2027, 12, 1, 10)),  # this year's has passed: next year
        ("6.12. 23:00", at(2026, 12, 6, 23)),
        ("6.12. 22:00", at(2027, 12, 6, 22)),
        ("24.12. 9:30am", at(2026, 12, 24, 9, 30)),
    ],
)
def test_absolute_dates(text: str, expected: datetime) -> None:
    check(text, expected)
    check(f"{text} Lieferung kommt", expected, "Lieferung kommt")


def test_a_date_without_a_year_on_the_29th_of_february() -> None:
    check("29.02. 10:00", at(2028, 2, 29, 10), now=at(2027, 3, 1, 12))
    check("29.02. 10:00", at(2028, 2, 29, 10), now=at(2028, 1, 1, 12))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("23:00", at(2026, 12, 6, 23)),  # still ahead: today
        ("22:11", at(2026, 12, 6, 22, 11)),
        ("22:10", at(2026, 12, 7, 22, 10)),  # not ahead: tomorrow
        ("9:00", at(2026, 12, 7, 9)),
        ("09:00", at(2026, 12, 7, 9)),
        ("17:30", at(2026, 12, 7, 17, 30)),
        ("9.00", at(2026, 12, 7, 9)),
        ("9:00 Uhr", at(2026, 12, 7, 9)),
        ("9 Uhr", at(2026, 12, 7, 9)),
        ("9am", at(2026, 12, 7, 9)),
        ("9 a.m.", at(2026, 12, 7, 9)),
        ("9:30pm", at(2026, 12, 7, 21, 30)),
        ("11pm", at(2026, 12, 6, 23)),
        ("11 pm", at(2026, 12, 6, 23)),
        ("12am", at(2026, 12, 7, 0)),
        ("12pm", at(2026, 12, 7, 12)),
        ("1.12", at(2026, 12, 7, 1, 12)),  # no trailing dot: a time, not a date
    ],
)
def test_bare_time(text: str, expected: datetime) -> None:
    check(text, expected)
    check(f"{text}, Hallo", expected, "Hallo")


def test_am_after_a_space_is_german_unless_it_ends_the_text() -> None:
    check("9 am", at(2026, 12, 7, 9))
    check("mo 9 am Lager abholen", at(2026, 12, 7, 9), "am Lager abholen")
    check("mo 9 pm call back", at(2026, 12, 7, 21), "call back")


def test_the_rest_of_the_text() -> None:
    check("mo 9:00", at(2026, 12, 7, 9), "")  # nothing else: allowed, the caller decides
    check("  mo 9:00:   Ihre Farbe ist da  ", at(2026, 12, 7, 9), "Ihre Farbe ist da")
    check("morgen 9:00, Hallo\nzweite Zeile", at(2026, 12, 7, 9), "Hallo\nzweite Zeile")
    check("mo 9 Dosen sind da", at(2026, 12, 7, 9), "Dosen sind da")


@pytest.mark.parametrize(
    ("now", "text", "expected"),
    [
        # A Monday morning.
        (at(2026, 12, 7, 8, 0), "mo 9", at(2026, 12, 7, 9)),  # today, still ahead
        (at(2026, 12, 7, 8, 0), "mo 8:00", at(2026, 12, 14, 8)),
        (at(2026, 12, 7, 8, 0), "heute 9:00", at(2026, 12, 7, 9)),
        (at(2026, 12, 7, 8, 0), "9:00", at(2026, 12, 7, 9)),
        (at(2026, 12, 7, 8, 0), "7:59", at(2026, 12, 8, 7, 59)),
        (at(2026, 12, 7, 8, 0), "so 9", at(2026, 12, 13, 9)),
        # New Year's Eve: across the year.
        (at(2026, 12, 31, 23, 30), "in 1h", at(2027, 1, 1, 0, 30)),
        (at(2026, 12, 31, 23, 30), "morgen 9", at(2027, 1, 1, 9)),
        (at(2026, 12, 31, 23, 30), "1.1. 9:00", at(2027, 1, 1, 9)),
        (at(2026, 12, 31, 23, 30), "fr 9", at(2027, 1, 1, 9)),
        # November: a date later this year stays this year.
        (at(2026, 11, 20, 12), "1.12. 10:00", at(2026, 12, 1, 10)),
        # Now given in another zone: the day is Berlin's (Monday 00:30 there).
        (datetime(2026, 12, 6, 23, 30, tzinfo=UTC), "heute 9", at(2026, 12, 7, 9)),
        (datetime(2026, 12, 6, 23, 30, tzinfo=UTC), "mo 9", at(2026, 12, 7, 9)),
    ],
)
def test_other_days(now: datetime, text: str, expected: datetime) -> None:
    check(text, expected, now=now)


def test_now_in_utc_gives_the_same_answers() -> None:
    in_utc = NOW.astimezone(UTC)
    for text in ("in 2h", "mo 9", "heute 23:00", "9:00", "1.12. 10:00"):
        assert parse_when(text, in_utc, BERLIN) == parse_when(text, NOW, BERLIN)


# --- daylight saving time ----------------------------------------------------------------------


def test_spring_forward() -> None:
    saturday = at(2026, 3, 28, 12, 0)
    check("morgen 2:30", at(2026, 3, 29, 3, 30), now=saturday)  # 02:30 does not exist
    check("morgen 1:59", at(2026, 3, 29, 1, 59), now=saturday)
    check("in 1d", at(2026, 3, 29, 12, 0), now=saturday)  # same clock time, 23 real hours
    check("in 24h", at(2026, 3, 29, 13, 0), now=saturday)  # 24 real hours
    check("in 1h", at(2026, 3, 29, 3, 30), now=at(2026, 3, 29, 1, 30))
    moment, _ = parse_when("in 1d", saturday, BERLIN)
    assert moment.astimezone(UTC) - saturday.astimezone(UTC) == timedelta(hours=23)


def test_fall_back() -> None:
    saturday = at(2026, 10, 24, 12, 0)
    check("morgen 2:30", at(2026, 10, 25, 2, 30), now=saturday)  # the first 02:30 (CEST)
    check("in 1d", at(2026, 10, 25, 12, 0), now=saturday)  # 25 real hours
    check("in 24h", at(2026, 10, 25, 11, 0), now=saturday)
    second = at(2026, 10, 25, 2, 30, fold=1)  # the second 02:30 (CET)
    check("in 30 min", at(2026, 10, 25, 3, 0), now=second)
    check("in 1h", at(2026, 10, 25, 2, 30, fold=1), now=at(2026, 10, 25, 2, 30))  # 02:30 again
    with pytest.raises(WhenError, match="is in the past"):
        parse_when("heute 2:45", second, BERLIN)  # the first 02:45 was an hour ago


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("morgn 9:00", "«morgn» is not a time (try: in 2h, mo 9:00, 2026-12-01 10:00)"),
        ("Hallo", "«Hallo» is not a time (try: in 2h, mo 9:00, 2026-12-01 10:00)"),
        ("", "no time given (try: in 2h, mo 9:00, 2026-12-01 10:00)"),
        ("   ", "no time given"),
        ("9", "«9» is not a time"),  # a bare number alone is not a time
        ("100 Dosen", "«100» is not a time"),
        ("9:00:30", "«9:00:30» is not a time"),
        ("mo", "«mo» needs a time, e.g. «mo 9:00»"),
        ("Montag", "«Montag» needs a time"),
        ("morgen", "«morgen» needs a time"),
        ("morgen früh", "«früh» is not a time (after «morgen», try e.g. 9:00)"),
        ("2026-12-24", "«2026-12-24» needs a time"),
        ("24.12.", "«24.12.» needs a time"),
        ("25:00", "«25:00» is not a time of day"),
        ("mo 25:00", "«25:00» is not a time of day"),
        ("mo 9:75", "«9:75» is not a time of day"),
        ("13pm", "«13pm» is not a time of day"),
        ("0am", "«0am» is not a time of day"),
        ("in Ordnung", "«in Ordnung» is not a duration (try: in 2h, in 90 min, in 3 days)"),
        ("in 2", "«in 2» is not a duration"),
        ("in 2x", "«in 2x» is not a duration"),
        ("in 2 Monaten", "«in 2» is not a duration"),
        ("31.02.2027 10:00", "«31.02.2027» is not a date"),
        ("2027-13-01 10:00", "«2027-13-01» is not a date"),
        ("29.02. 10:00", "«29.02.» is not a date"),  # neither 2026 nor 2027 has one
        ("in 999999 weeks", "«in 999999 weeks» is too far ahead"),
    ],
)
def test_what_is_not_understood_is_named(text: str, message: str) -> None:
    with pytest.raises(WhenError) as caught:
        parse_when(text, NOW, BERLIN)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("heute 17:00", "«heute 17:00» (Sun 2026-12-06 17:00) is in the past"),
        ("today 22:10", "«today 22:10» (Sun 2026-12-06 22:10) is in the past"),
        ("2026-12-01 10:00", "«2026-12-01 10:00» (Tue 2026-12-01 10:00) is in the past"),
        ("01.12.2026 10:00", "is in the past"),
        ("2026-12-06T22:09", "is in the past"),
        ("in 0 min", "«in 0 min» (Sun 2026-12-06 22:10) is in the past"),
    ],
)
def test_a_moment_not_in_the_future_is_refused(text: str, message: str) -> None:
    with pytest.raises(WhenError) as caught:
        parse_when(text, NOW, BERLIN)
    assert message in str(caught.value)


def test_when_error_is_a_value_error() -> None:
    assert issubclass(WhenError, ValueError)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_when("in 2h", datetime(2026, 12, 6, 22, 10), BERLIN)
