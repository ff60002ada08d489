"""Business hours: intervals, day precedence, open/closed moments, open-time arithmetic, DST.

The shop is a paint retailer in Nordrhein-Westfalen: Monday to Saturday 09:00-13:00 and
14:00-18:00, closed on Sundays and public holidays, Christmas Eve 09:00-13:00. The clock is
always a plain datetime passed in.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest

from hub.scheduler.hours import (
    DAY_MINUTES,
    HORIZON_DAYS,
    Interval,
    Schedule,
    check_day,
    parse_day,
    parse_interval,
    wall_clock,
)

BERLIN = ZoneInfo("Europe/Berlin")
SPLIT = (Interval(9 * 60, 13 * 60), Interval(14 * 60, 18 * 60))
CHRISTMAS_EVE = date(2026, 12, 24)
INVENTORY = date(2026, 8, 10)  # a Monday the shop closes to count its stock


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, *, fold: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=BERLIN, fold=fold)


def shop(subdiv: str = "NW", **kwargs: object) -> Schedule:
    options: dict[str, object] = {
        "special": {CHRISTMAS_EVE: (Interval(9 * 60, 13 * 60),)},
        "closed": frozenset({INVENTORY}),
        "holidays": holidays.country_holidays("DE", subdiv=subdiv),
    }
    options.update(kwargs)
    return Schedule(BERLIN, (SPLIT,) * 6 + ((),), **options)  # type: ignore[arg-type]


NW = shop()
BE = shop("BE")


def utc(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment.astimezone(UTC)


def same(actual: datetime | None, expected: datetime) -> None:
    """Equal as instants and given in the schedule's zone."""
    assert actual is not None
    assert actual.tzinfo is BERLIN
    assert actual.astimezone(UTC) == expected.astimezone(UTC)
    assert actual.utcoffset() == expected.astimezone(BERLIN).utcoffset()


# --- intervals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("09:00-13:00", 540, 780),
        ("9:00-13:00", 540, 780),
        ("9-13", 540, 780),
        ("09:00–13:00", 540, 780),  # en dash
        ("09:00—13:00", 540, 780),  # em dash
        ("13:30 - 18:00", 810, 1080),
        ("  8.30-12.15 ", 510, 735),
        ("00:00-24:00", 0, DAY_MINUTES),
        ("18-24", 1080, DAY_MINUTES),
        ("0-2", 0, 120),
    ],
)
def test_parse_interval_accepts(text: str, start: int, end: int) -> None:
    assert parse_interval(text) == Interval(start, end)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("13:00-09:00", "13:00-09:00: the end must be after the start"),
        ("10-10", "10-10: the end must be after the start"),
        ("24:00-24:00", "the end must be after the start"),
        ("", "an opening interval is empty (expected e.g. 09:00-13:00)"),
        ("   ", "an opening interval is empty"),
        ("25:00-26:00", "25:00-26:00: 25:00 is not a time of day (00:00 to 24:00)"),
        ("09:00-25", "09:00-25: 25 is not a time of day"),
        ("9:60-13", "9:60 is not a time of day"),
        ("9-24:30", "24:30 is not a time of day"),
        ("abc", "«abc» is not an opening interval (expected e.g. 09:00-13:00)"),
        ("09:00", "«09:00» is not an opening interval"),
        ("9-13-18", "is not an opening interval"),
        ("9:0-13", "is not an opening interval"),
        ("9 to 13", "is not an opening interval"),
    ],
)
def test_parse_interval_refuses_with_a_message_for_the_admin(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_interval(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(("start", "end"), [(-1, 10), (10, 10), (20, 10), (0, 1441), (1440, 1441)])
def test_interval_refuses_impossible_minutes(start: int, end: int) -> None:
    with pytest.raises(ValueError, match="0 <= start < end <= 1440"):
        Interval(start, end)


def test_interval_reads_like_hours() -> None:
    assert str(Interval(9 * 60, 13 * 60 + 30)) == "09:00-13:30"
    assert str(Interval(18 * 60, DAY_MINUTES)) == "18:00-24:00"


def test_check_day_sorts_and_allows_touching_intervals() -> None:
    later, earlier = parse_interval("13:00-18:00"), parse_interval("09:00-13:00")
    assert check_day([later, earlier]) == (earlier, later)
    assert check_day([]) == ()


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["09:00-13:00", "12:00-18:00"], "09:00-13:00 and 12:00-18:00 overlap"),
        (["12:00-18:00", "09:00-13:00"], "09:00-13:00 and 12:00-18:00 overlap"),
        (["09:00-18:00", "10:00-11:00"], "09:00-18:00 and 10:00-11:00 overlap"),
        (["9-13", "9-13"], "09:00-13:00 and 09:00-13:00 overlap"),
    ],
)
def test_check_day_names_the_overlapping_intervals(texts: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_day(parse_interval(t) for t in texts)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9-13, 14-18", SPLIT),
        ("14:00-18:00; 09:00-13:00", SPLIT),
        ("closed", ()),
        ("Geschlossen", ()),
        ("", ()),
        ("-", ()),
    ],
)
def test_parse_day(text: str, expected: tuple[Interval, ...]) -> None:
    assert parse_day(text) == expected


def test_parse_day_refuses_overlaps_and_garbage() -> None:
    with pytest.raises(ValueError, match="overlap"):
        parse_day("9-13, 12-18")
    with pytest.raises(ValueError, match="«later» is not an opening interval"):
        parse_day("9-13, later")


# --- building a schedule -----------------------------------------------------------------------


def test_schedule_needs_seven_days() -> None:
    with pytest.raises(ValueError, match="7 days, Monday first; got 6"):
        Schedule(BERLIN, (SPLIT,) * 6)


def test_schedule_names_the_day_with_overlapping_hours() -> None:
    bad = (Interval(540, 780), Interval(720, 1080))
    with pytest.raises(ValueError, match="Tuesday: 09:00-13:00 and 12:00-18:00 overlap"):
        Schedule(BERLIN, ((), bad, (), (), (), (), ()))
    with pytest.raises(ValueError, match="2026-12-24: 09:00-13:00 and 12:00-18:00 overlap"):
        Schedule(BERLIN, ((),) * 7, special={CHRISTMAS_EVE: bad})


def test_schedule_sorts_and_freezes_what_it_is_given() -> None:
    special: dict[date, tuple[Interval, ...]] = {CHRISTMAS_EVE: (SPLIT[1], SPLIT[0])}
    schedule = Schedule(BERLIN, ((SPLIT[1], SPLIT[0]),) * 7, special=special)
    special[CHRISTMAS_EVE] = ()  # the caller's dict is copied, not kept
    assert schedule.weekly[0] == SPLIT
    assert schedule.intervals_on(CHRISTMAS_EVE) == SPLIT
    with pytest.raises(TypeError):
        schedule.special[CHRISTMAS_EVE] = ()  # type: ignore[index]


def test_schedule_refuses_datetimes_where_dates_belong() -> None:
    noon = datetime(2026, 12, 24, 12, 0)
    with pytest.raises(TypeError, match="expected a date"):
        Schedule(BERLIN, (SPLIT,) * 7, special={noon: SPLIT})
    with pytest.raises(TypeError, match="expected a date"):
        Schedule(BERLIN, (SPLIT,) * 7, closed=frozenset({noon}))
    with pytest.raises(TypeError, match="expected a date"):
        NW.intervals_on(noon)


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 12, 7, 10, 0)
    for call in (NW.is_open, NW.next_opening, NW.next_closing, NW.closed_since):
        with pytest.raises(ValueError, match="has no time zone"):
            call(naive)
    with pytest.raises(ValueError, match="has no time zone"):
        NW.add_open_minutes(naive, 5)
    with pytest.raises(ValueError, match="has no time zone"):
        Schedule.always_open(BERLIN).is_open(naive)


# --- days: special dates, closing days, holidays -----------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "day", "intervals", "name"),
    [
        (NW, date(2026, 12, 7), SPLIT, None),  # a Monday
        (NW, date(2026, 12, 12), SPLIT, None),  # a Saturday
        (NW, date(2026, 12, 6), (), None),  # a Sunday: closed, but no holiday
        (NW, date(2026, 4, 6), (), "Easter Monday"),
        (NW, date(2026, 6, 4), (), "Corpus Christi"),  # a holiday in NW ...
        (BE, date(2026, 6, 4), SPLIT, None),  # ... and not in Berlin
        (NW, date(2026, 11, 1), (), "All Saints' Day"),  # a Sunday anyway
        (BE, date(2027, 3, 8), (), "Women's Day"),  # a Monday, a holiday in Berlin only
        (NW, date(2027, 3, 8), SPLIT, None),
        (NW, CHRISTMAS_EVE, (Interval(540, 780),), None),  # special hours
        (NW, date(2026, 12, 25), (), "Christmas Day"),
        (NW, date(2026, 12, 26), (), "Second Day of Christmas"),
        (NW, INVENTORY, (), "closed"),  # a closing date
        (NW, date(2026, 8, 11), SPLIT, None),
    ],
)
def test_a_days_hours_and_why_it_is_closed(
    schedule: Schedule, day: date, intervals: tuple[Interval, ...], name: str | None
) -> None:
    assert schedule.intervals_on(day) == intervals
    assert schedule.holiday_name(day) == name
    assert schedule.is_closed_day(day) is (not intervals)


def test_special_hours_win_over_a_holiday_and_a_closing_day() -> None:
    unity_day = date(2026, 10, 3)  # a Saturday and a public holiday: a sale anyway
    morning = (Interval(600, 720),)
    schedule = shop(
        special={unity_day: morning, INVENTORY: morning, date(2026, 12, 7): ()},
    )
    assert schedule.intervals_on(unity_day) == morning
    assert schedule.holiday_name(unity_day) is None
    assert schedule.intervals_on(INVENTORY) == morning
    # An empty special closes a normal Monday; it is not a holiday.
    assert schedule.is_closed_day(date(2026, 12, 7))
    assert schedule.holiday_name(date(2026, 12, 7)) is None
    assert not schedule.is_open(at(2026, 12, 7, 10))


def test_a_closing_date_that_is_a_holiday_is_named_after_the_holiday() -> None:
    schedule = shop(closed=frozenset({date(2026, 4, 6)}))
    assert schedule.holiday_name(date(2026, 4, 6)) == "Easter Monday"


# --- is_open -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(2026, 12, 7, 0, 0), False),
        (at(2026, 12, 7, 8, 59, 59), False),
        (at(2026, 12, 7, 9, 0), True),  # an opening includes its start ...
        (at(2026, 12, 7, 12, 59, 59), True),
        (at(2026, 12, 7, 13, 0), False),  # ... not its end
        (at(2026, 12, 7, 13, 30), False),  # lunch
        (at(2026, 12, 7, 14, 0), True),
        (at(2026, 12, 7, 17, 59), True),
        (at(2026, 12, 7, 18, 0), False),
        (at(2026, 12, 6, 12, 0), False),  # Sunday
        (at(2026, 12, 12, 10, 0), True),  # Saturday
        (at(2026, 4, 6, 10, 0), False),  # Easter Monday
        (at(2026, 6, 4, 10, 0), False),  # Corpus Christi in NW
        (at(2026, 12, 24, 12, 0), True),  # Christmas Eve morning
        (at(2026, 12, 24, 15, 0), False),  # Christmas Eve afternoon
        (at(2026, 12, 25, 10, 0), False),
        (at(2026, 8, 10, 10, 0), False),  # the closing date
    ],
)
def test_is_open(moment: datetime, expected: bool) -> None:
    assert NW.is_open(moment) is expected
    assert NW.is_open(moment.astimezone(UTC)) is expected  # any zone, same instant


def test_corpus_christi_is_a_working_day_in_berlin() -> None:
    assert BE.is_open(at(2026, 6, 4, 10, 0))
    same(BE.next_opening(at(2026, 6, 3, 18, 30)), at(2026, 6, 4, 9))
    same(NW.next_opening(at(2026, 6, 3, 18, 30)), at(2026, 6, 5, 9))


# --- next_opening, next_closing, closed_since --------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(2026, 12, 7, 7, 0), at(2026, 12, 7, 9)),
        (at(2026, 12, 7, 9, 0), at(2026, 12, 7, 9)),  # opening right now counts
        (at(2026, 12, 7, 10, 0), at(2026, 12, 7, 14)),  # open: the next opening
        (at(2026, 12, 7, 13, 0), at(2026, 12, 7, 14)),
        (at(2026, 12, 7, 14, 0), at(2026, 12, 7, 14)),
        (at(2026, 12, 7, 18, 0), at(2026, 12, 8, 9)),
        (at(2026, 12, 5, 18, 0), at(2026, 12, 7, 9)),  # Saturday evening -> Monday
        (at(2026, 12, 6, 23, 59), at(2026, 12, 7, 9)),
        (at(2026, 4, 4, 19, 0), at(2026, 4, 7, 9)),  # Easter Monday closed -> Tuesday
        (at(2026, 4, 2, 18, 30), at(2026, 4, 4, 9)),  # Good Friday closed -> Saturday
        (at(2026, 12, 24, 13, 0), at(2026, 12, 28, 9)),  # Christmas: 25th, 26th, Sunday
        (at(2026, 8, 8, 18, 0), at(2026, 8, 11, 9)),  # Sunday + the closing date
    ],
)
def test_next_opening(moment: datetime, expected: datetime) -> None:
    same(NW.next_opening(moment), expected)
    same(NW.next_opening(moment.astimezone(UTC)), expected)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(2026, 12, 7, 9, 0), at(2026, 12, 7, 13)),
        (at(2026, 12, 7, 10, 0), at(2026, 12, 7, 13)),
        (at(2026, 12, 7, 13, 0), at(2026, 12, 7, 18)),  # closed: the end of the next stretch
        (at(2026, 12, 7, 15, 0), at(2026, 12, 7, 18)),
        (at(2026, 12, 5, 19, 0), at(2026, 12, 7, 13)),
        (at(2026, 12, 24, 10, 0), at(2026, 12, 24, 13)),
        (at(2026, 12, 24, 14, 0), at(2026, 12, 28, 13)),
    ],
)
def test_next_closing(moment: datetime, expected: datetime) -> None:
    same(NW.next_closing(moment), expected)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(2026, 12, 7, 10, 0), None),  # open
        (at(2026, 12, 7, 9, 0), None),
        (at(2026, 12, 7, 13, 0), at(2026, 12, 7, 13)),  # closing right now
        (at(2026, 12, 7, 13, 30), at(2026, 12, 7, 13)),
        (at(2026, 12, 7, 20, 0), at(2026, 12, 7, 18)),
        (at(2026, 12, 7, 8, 0), at(2026, 12, 5, 18)),  # Monday morning: since Saturday
        (at(2026, 12, 6, 12, 0), at(2026, 12, 5, 18)),
        (at(2026, 4, 7, 8, 59), at(2026, 4, 4, 18)),  # over Easter
        (at(2026, 12, 28, 8, 0), at(2026, 12, 24, 13)),  # over Christmas
        (at(2026, 8, 10, 12, 0), at(2026, 8, 8, 18)),  # the closing date
    ],
)
def test_closed_since(moment: datetime, expected: datetime | None) -> None:
    if expected is None:
        assert NW.closed_since(moment) is None
    else:
        same(NW.closed_since(moment), expected)


def test_touching_intervals_are_one_stretch() -> None:
    schedule = Schedule(BERLIN, ((Interval(540, 780), Interval(780, 1080)),) * 7)
    assert schedule.is_open(at(2026, 12, 7, 13, 0))
    same(schedule.next_closing(at(2026, 12, 7, 10)), at(2026, 12, 7, 18))
    same(schedule.next_opening(at(2026, 12, 7, 10)), at(2026, 12, 8, 9))
    same(schedule.next_opening(at(2026, 12, 7, 13)), at(2026, 12, 8, 9))  # 13:00 is no opening
    assert schedule.closed_since(at(2026, 12, 7, 13)) is None
    same(schedule.add_open_minutes(at(2026, 12, 7, 12, 50), 20), at(2026, 12, 7, 13, 10))


# A bar: Friday and Saturday nights, 18:00 until 02:00.
NIGHT = (Interval(18 * 60, DAY_MINUTES),)
MORNING = (Interval(0, 120),)
BAR = Schedule(BERLIN, ((), (), (), (), NIGHT, MORNING + NIGHT, MORNING))


def test_open_until_midnight_and_across_midnight() -> None:
    friday = (2026, 12, 11)
    assert BAR.is_open(at(*friday, 23, 59))
    assert BAR.is_open(at(2026, 12, 12, 0, 0))  # Saturday midnight: still open
    assert not BAR.is_open(at(2026, 12, 12, 2, 0))
    same(BAR.next_closing(at(*friday, 19)), at(2026, 12, 12, 2))  # not 24:00
    same(BAR.next_closing(at(2026, 12, 12, 20)), at(2026, 12, 13, 2))
    same(BAR.next_opening(at(*friday, 23)), at(2026, 12, 12, 18))
    same(BAR.next_opening(at(2026, 12, 12, 0, 0)), at(2026, 12, 12, 18))  # 00:00 is no opening
    same(BAR.next_opening(at(2026, 12, 13, 1)), at(2026, 12, 18, 18))
    assert BAR.closed_since(at(2026, 12, 12, 0, 0)) is None
    same(BAR.closed_since(at(2026, 12, 12, 3)), at(2026, 12, 12, 2))
    same(BAR.closed_since(at(*friday, 17)), at(2026, 12, 6, 2))  # last Sunday morning
    # Two hours of service from Friday 23:00: one on Friday, one after midnight.
    same(BAR.add_open_minutes(at(*friday, 23), 120), at(2026, 12, 12, 1))
    same(BAR.add_open_minutes(at(*friday, 23), 185), at(2026, 12, 12, 18, 5))


def test_open_until_midnight_only() -> None:
    late = Schedule(BERLIN, ((Interval(20 * 60, DAY_MINUTES),),) * 7)
    same(late.next_closing(at(2026, 12, 7, 21)), at(2026, 12, 8, 0))
    assert not late.is_open(at(2026, 12, 8, 0, 0))
    same(late.closed_since(at(2026, 12, 8, 0, 30)), at(2026, 12, 8, 0))


# --- add_open_minutes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "minutes", "expected"),
    [
        (at(2026, 12, 5, 17, 50), 15, at(2026, 12, 7, 9, 5)),  # across a closed Sunday
        (at(2026, 4, 4, 17, 50), 15, at(2026, 4, 7, 9, 5)),  # ... and Easter Monday
        (at(2026, 6, 3, 17, 50), 15, at(2026, 6, 5, 9, 5)),  # across Corpus Christi
        (at(2026, 12, 24, 12, 50), 15, at(2026, 12, 28, 9, 5)),  # across Christmas
        (at(2026, 12, 7, 10, 0), 30, at(2026, 12, 7, 10, 30)),
        (at(2026, 12, 7, 12, 50), 20, at(2026, 12, 7, 14, 10)),  # across lunch
        (at(2026, 12, 7, 12, 30), 30, at(2026, 12, 7, 13, 0)),  # due at closing time
        (at(2026, 12, 6, 12, 0), 15, at(2026, 12, 7, 9, 15)),  # from a closed moment
        (at(2026, 12, 6, 12, 0), 0, at(2026, 12, 7, 9, 0)),  # the clock starts at opening
        (at(2026, 12, 7, 10, 0), 0, at(2026, 12, 7, 10, 0)),
        (at(2026, 12, 7, 9, 0), 8 * 60, at(2026, 12, 7, 18, 0)),  # a whole day
        (at(2026, 12, 7, 9, 0), 8 * 60 + 1, at(2026, 12, 8, 9, 1)),
        (at(2026, 12, 7, 9, 0), 6 * 8 * 60, at(2026, 12, 12, 18, 0)),  # a whole week
        (at(2026, 12, 7, 10, 0), 0.5, at(2026, 12, 7, 10, 0, 30)),
    ],
)
def test_add_open_minutes(start: datetime, minutes: float, expected: datetime) -> None:
    same(NW.add_open_minutes(start, minutes), expected)
    same(NW.add_open_minutes(start.astimezone(UTC), minutes), expected)


def test_add_open_minutes_in_berlin_where_corpus_christi_is_a_working_day() -> None:
    same(BE.add_open_minutes(at(2026, 6, 3, 17, 50), 15), at(2026, 6, 4, 9, 5))


def test_add_open_minutes_refuses_negative_minutes() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        NW.add_open_minutes(at(2026, 12, 7, 10), -1)


# --- daylight saving time ----------------------------------------------------------------------

EARLY = Schedule(BERLIN, ((Interval(60, 300),),) * 7)  # 01:00-05:00 every day


def test_spring_forward_an_interval_loses_an_hour() -> None:
    opening = EARLY.next_opening(at(2026, 3, 29, 0, 0))
    closing = EARLY.next_closing(at(2026, 3, 29, 0, 0))
    same(opening, at(2026, 3, 29, 1, 0))
    same(closing, at(2026, 3, 29, 5, 0))
    assert opening is not None and closing is not None
    assert closing - opening == timedelta(hours=4)  # wall clock (same zone) ...
    assert closing.astimezone(UTC) - opening.astimezone(UTC) == timedelta(hours=3)  # ... real
    same(EARLY.add_open_minutes(at(2026, 3, 29, 1, 0), 180), at(2026, 3, 29, 5, 0))
    same(EARLY.add_open_minutes(at(2026, 3, 29, 1, 0), 181), at(2026, 3, 30, 1, 1))
    same(EARLY.add_open_minutes(at(2026, 3, 29, 1, 30), 60), at(2026, 3, 29, 3, 30))
    assert EARLY.is_open(datetime(2026, 3, 29, 1, 30, tzinfo=UTC))  # 03:30 CEST


def test_fall_back_an_interval_gains_an_hour() -> None:
    opening = EARLY.next_opening(at(2026, 10, 25, 0, 0))
    closing = EARLY.next_closing(at(2026, 10, 25, 0, 0))
    same(opening, at(2026, 10, 25, 1, 0))
    same(closing, at(2026, 10, 25, 5, 0))
    assert opening is not None and closing is not None
    assert closing.astimezone(UTC) - opening.astimezone(UTC) == timedelta(hours=5)
    same(EARLY.add_open_minutes(at(2026, 10, 25, 1, 0), 300), at(2026, 10, 25, 5, 0))
    # 150 real minutes after 01:00 CEST is the second 02:30 (CET).
    after = EARLY.add_open_minutes(at(2026, 10, 25, 1, 0), 150)
    assert after is not None
    assert after.astimezone(UTC) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert (after.hour, after.minute, after.utcoffset()) == (2, 30, timedelta(hours=1))
    assert EARLY.is_open(at(2026, 10, 25, 2, 30, fold=1))


def test_a_time_that_does_not_exist_is_read_with_the_offset_before_the_change() -> None:
    day = date(2026, 3, 29)
    assert wall_clock(day, 150, BERLIN) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert wall_clock(day, 150, BERLIN).hour == 3  # the clocks show 03:30
    # 02:30-04:00 opens at 03:30 CEST; 02:30-03:00 lasts nothing at all.
    gap = Schedule(BERLIN, ((),) * 7, special={day: (Interval(150, 240),)})
    same(gap.next_opening(at(2026, 3, 29, 0)), at(2026, 3, 29, 3, 30))
    none = Schedule(BERLIN, ((),) * 7, special={day: (Interval(150, 180),)})
    assert none.next_opening(at(2026, 3, 29, 0)) is None
    # 02:00-02:45 and 03:00-04:00 both map onto the hour after the gap: one stretch.
    both = Schedule(BERLIN, ((),) * 7, special={day: (Interval(120, 165), Interval(180, 240))})
    same(both.next_opening(at(2026, 3, 29, 0)), at(2026, 3, 29, 3, 0))
    same(both.next_closing(at(2026, 3, 29, 0)), at(2026, 3, 29, 4, 0))


def test_a_repeated_time_means_its_first_occurrence() -> None:
    day = date(2026, 10, 25)
    assert wall_clock(day, 150, BERLIN).utcoffset() == timedelta(hours=2)


def test_shop_hours_around_the_dst_weekends() -> None:
    same(NW.add_open_minutes(at(2026, 3, 28, 17, 50), 15), at(2026, 3, 30, 9, 5))
    same(NW.add_open_minutes(at(2026, 10, 24, 17, 50), 15), at(2026, 10, 26, 9, 5))
    same(NW.closed_since(at(2026, 3, 30, 8, 0)), at(2026, 3, 28, 18, 0))
    same(NW.next_opening(at(2026, 10, 24, 20, 0)), at(2026, 10, 26, 9, 0))


def test_always_open_counts_real_minutes_across_dst() -> None:
    always = Schedule.always_open(BERLIN)
    same(always.add_open_minutes(at(2026, 3, 29, 1, 30), 60), at(2026, 3, 29, 3, 30))
    same(always.add_open_minutes(at(2026, 10, 25, 1, 30), 120), at(2026, 10, 25, 2, 30, fold=1))


# --- never open, always open, the horizon ------------------------------------------------------


def test_a_schedule_that_is_never_open() -> None:
    never = Schedule(BERLIN, ((),) * 7)
    moment = at(2026, 12, 7, 10)
    assert not never.is_open(moment)
    assert never.next_opening(moment) is None
    assert never.next_closing(moment) is None
    assert never.add_open_minutes(moment, 15) is None
    same(never.closed_since(moment), at(2025, 11, 2, 0, 0))  # the horizon start
    assert date(2026, 12, 7) - timedelta(days=HORIZON_DAYS) == date(2025, 11, 2)


def test_only_special_dates_open() -> None:
    schedule = Schedule(BERLIN, ((),) * 7, special={CHRISTMAS_EVE: (Interval(540, 780),)})
    same(schedule.next_opening(at(2026, 6, 1)), at(2026, 12, 24, 9))
    same(schedule.next_closing(at(2026, 6, 1)), at(2026, 12, 24, 13))
    same(schedule.closed_since(at(2027, 1, 5)), at(2026, 12, 24, 13))
    same(schedule.add_open_minutes(at(2026, 6, 1), 230), at(2026, 12, 24, 12, 50))
    assert schedule.add_open_minutes(at(2026, 6, 1), 250) is None
    assert schedule.next_opening(at(2026, 12, 24, 10)) is None


def test_the_horizon() -> None:
    start = date(2026, 1, 1)
    near = start + timedelta(days=HORIZON_DAYS)
    far = start + timedelta(days=HORIZON_DAYS + 1)
    morning = (Interval(540, 780),)
    ahead = Schedule(BERLIN, ((),) * 7, special={near: morning})
    same(ahead.next_opening(at(2026, 1, 1, 12)), wall_clock(near, 540, BERLIN))
    beyond = Schedule(BERLIN, ((),) * 7, special={far: morning})
    assert beyond.next_opening(at(2026, 1, 1, 12)) is None
    assert beyond.next_closing(at(2026, 1, 1, 12)) is None
    behind = Schedule(BERLIN, ((),) * 7, special={start - timedelta(days=HORIZON_DAYS): morning})
    same(behind.closed_since(at(2026, 1, 1, 12)), wall_clock(behind_day(start), 780, BERLIN))
    # A weekly schedule behaves the same: far-off openings are out of sight.
    weekly = Schedule(BERLIN, (SPLIT,) * 7, closed=frozenset(_days(start, HORIZON_DAYS + 3)))
    assert weekly.next_opening(at(2026, 1, 1, 12)) is None


def behind_day(start: date) -> date:
    return start - timedelta(days=HORIZON_DAYS)


def _days(first: date, count: int) -> list[date]:
    return [first + timedelta(days=n) for n in range(count)]


def test_always_open() -> None:
    always = Schedule.always_open(BERLIN)
    moment = at(2026, 12, 6, 3, 0)
    assert always.is_open(moment)
    assert always.next_opening(moment) is None
    assert always.next_closing(moment) is None
    assert always.closed_since(moment) is None
    same(always.add_open_minutes(moment, 90), at(2026, 12, 6, 4, 30))
    assert always == Schedule(BERLIN, ((parse_interval("00:00-24:00"),),) * 7)


def test_around_the_clock_except_holidays() -> None:
    nonstop = Schedule(BERLIN, ((Interval(0, DAY_MINUTES),),) * 7, holidays=NW.holidays)
    same(nonstop.next_closing(at(2026, 12, 20, 12)), at(2026, 12, 25, 0))
    same(nonstop.next_opening(at(2026, 12, 20, 12)), at(2026, 12, 27, 0))
    same(nonstop.closed_since(at(2026, 12, 26, 12)), at(2026, 12, 25, 0))
    same(nonstop.add_open_minutes(at(2026, 12, 24, 23, 0), 90), at(2026, 12, 27, 0, 30))


# --- consistency over many moments -------------------------------------------------------------


@pytest.mark.parametrize("schedule", [NW, BE, BAR, EARLY], ids=["NW", "BE", "bar", "early"])
def test_the_answers_agree_with_each_other(schedule: Schedule) -> None:
    rng = random.Random(20261206)
    first = datetime(2026, 1, 1, tzinfo=UTC)
    second = timedelta(seconds=1)  # subtracted in UTC: wall-clock arithmetic would skip DST
    for _ in range(300):
        moment = first + timedelta(minutes=rng.randrange(366 * 24 * 60))
        opening = utc(schedule.next_opening(moment))
        closing = utc(schedule.next_closing(moment))
        assert opening >= moment and closing > moment
        assert schedule.is_open(opening) and not schedule.is_open(opening - second)
        assert not schedule.is_open(closing) and schedule.is_open(closing - second)
        since = schedule.closed_since(moment)
        since = None if since is None else utc(since)
        if schedule.is_open(moment):
            assert since is None
            assert closing < opening
            assert schedule.add_open_minutes(moment, 0) == moment
        else:
            assert since is not None and since <= moment
            assert schedule.is_open(since - second) and not schedule.is_open(since)
            assert utc(schedule.closed_since(opening - second)) == since  # one closed period
            assert opening < closing
            assert schedule.add_open_minutes(moment, 0) == opening
        minutes = rng.randrange(1, 3000)
        due = utc(schedule.add_open_minutes(moment, minutes))
        assert schedule.is_open(due - second)
