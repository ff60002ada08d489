"""The pure KPI arithmetic: percentiles, opening-hours durations, DST offsets, slicing and
the renderings."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from hub.kpi import render
from hub.kpi.compute import (
    Exchange,
    Facts,
    LinkFact,
    OpenClock,
    build_report,
    day_number,
    epoch,
    offset_steps,
    percentile,
    period_bounds,
    week_key,
    week_of,
)
from hub.kpi.model import Metrics, Period
from hub.scheduler.hours import Schedule, parse_day

BERLIN = ZoneInfo("Europe/Berlin")
PERIOD = Period(date(2026, 11, 2), date(2026, 11, 4), "Europe/Berlin")


def at(text: str) -> int:
    """Epoch seconds of a Berlin wall-clock time."""
    return epoch(datetime.fromisoformat(text).replace(tzinfo=BERLIN))


def weekdays_9_to_18() -> Schedule:
    open_ = parse_day("09:00-18:00")
    return Schedule(BERLIN, (open_,) * 5 + ((), ()))


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([7], 0.9, 7.0),
        ([0, 300], 0.5, 150.0),
        ([0, 300, 600], 0.5, 300.0),
        ([0, 300, 600], 0.9, 540.0),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9, 9.1),
    ],
)
def test_percentile_interpolates_like_percentile_cont(
    values: list[int], q: float, expected: float | None
) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_open_clock_counts_only_opening_hours() -> None:
    clock = OpenClock(weekdays_9_to_18(), date(2026, 11, 1), date(2026, 11, 10))
    # Inside one opening.
    assert clock.seconds(at("2026-11-02T10:00"), at("2026-11-02T10:05")) == 300
    # Answered after closing: only 17:50-18:00.
    assert clock.seconds(at("2026-11-02T17:50"), at("2026-11-02T19:00")) == 600
    # Over the night: 10 min + 10 min.
    assert clock.seconds(at("2026-11-02T17:50"), at("2026-11-03T09:10")) == 1200
    # Friday evening to Monday morning: 17:55-18:00 and 09:00-09:05.
    assert clock.seconds(at("2026-11-06T17:55"), at("2026-11-09T09:05")) == 600
    # All of it closed.
    assert clock.seconds(at("2026-11-03T20:00"), at("2026-11-03T20:10")) == 0
    assert clock.seconds(at("2026-11-03T20:10"), at("2026-11-03T20:00")) == 0


def test_open_clock_merges_touching_and_midnight_openings() -> None:
    day = parse_day("00:00-24:00")
    clock = OpenClock(Schedule(BERLIN, (day,) * 7), date(2026, 11, 1), date(2026, 11, 5))
    assert clock.seconds(at("2026-11-02T23:00"), at("2026-11-03T01:00")) == 7200


def test_without_a_schedule_durations_are_wall_clock() -> None:
    clock = OpenClock(None, date(2026, 11, 1), date(2026, 11, 1))
    assert clock.seconds(100, 4300) == 4200
    assert clock.seconds(4300, 100) == 0


def test_open_clock_before_and_after_its_openings() -> None:
    # The sentinel stretch: instants before the first opening have no open seconds before
    # them; after the last, the open seconds stop growing.
    clock = OpenClock(weekdays_9_to_18(), date(2026, 11, 2), date(2026, 11, 2))
    assert clock.seconds(at("2026-10-30T10:00"), at("2026-11-02T09:10")) == 600
    assert clock.seconds(at("2026-11-02T17:50"), at("2026-11-20T12:00")) == 600
    assert clock.seconds(at("2026-10-01T10:00"), at("2026-10-02T10:00")) == 0


def test_open_clock_on_the_autumn_dst_day() -> None:
    # 2026-10-25: 02:00-03:00 happens twice; 01:00-05:00 lasts 5 real hours.
    day = parse_day("01:00-05:00")
    clock = OpenClock(Schedule(BERLIN, (day,) * 7), date(2026, 10, 24), date(2026, 10, 26))
    start = epoch(datetime(2026, 10, 24, 23, 0, tzinfo=UTC))  # 01:00 CEST
    assert clock.seconds(start, start + 6 * 3600) == 5 * 3600


def test_offset_steps_find_the_dst_transitions() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    end = datetime(2026, 11, 1, tzinfo=UTC)
    steps = offset_steps("Europe/Berlin", start, end)
    assert [offset for _t, offset in steps] == [3600, 7200, 3600]
    assert steps[1][0] == epoch(datetime(2026, 3, 29, 1, 0, tzinfo=UTC))
    assert steps[2][0] == epoch(datetime(2026, 10, 25, 1, 0, tzinfo=UTC))
    assert offset_steps("UTC", start, end) == [(steps[0][0], 0)]


def test_period_bounds_are_local_midnights() -> None:
    start, end = period_bounds(PERIOD)
    assert start == datetime(2026, 11, 1, 23, 0, tzinfo=UTC)
    assert end == datetime(2026, 11, 4, 23, 0, tzinfo=UTC)


def test_weeks_are_iso_weeks() -> None:
    monday = day_number(date(2026, 11, 2))
    assert week_of(monday) == week_of(monday + 6) != week_of(monday + 7)
    assert week_key(week_of(monday)) == ("2026-W45", "W45 2026")
    assert week_key(week_of(day_number(date(2027, 1, 1)))) == ("2026-W53", "W53 2026")


def facts() -> Facts:
    mon, tue = day_number(date(2026, 11, 2)), day_number(date(2026, 11, 3))

    def exchange(start: str, cid: int, reply: str | None, adviser: str | None) -> Exchange:
        local = at(start) + 3600  # CET
        return Exchange(at(start), local, reply and at(reply), "whatsapp", adviser, cid)

    return Facts(
        # hub.db.kpi._conversations' sums: conversations 1 and 2 wrote on Monday (2 in two
        # half days: its second span counts nothing), 2 also on Tuesday (the same week).
        # (channel, f, l, f's day, l's day, f's week, l's week, first seen)
        conversations=[
            ("whatsapp", mon, mon, 2, 0, 2, 0, 2),
            ("whatsapp", tue, tue, 1, 0, 0, 0, 0),
        ],
        new=[(mon, "whatsapp", 2)],
        exchanges=[
            exchange("2026-11-02T10:00", 1, "2026-11-02T10:05", "@a:x"),
            exchange("2026-11-02T17:50", 2, "2026-11-03T09:10", "@b:x"),
            exchange("2026-11-03T11:00", 2, None, None),
        ],
        missed=[(tue, 35, "whatsapp", 1)],
        links=[
            LinkFact(mon, "whatsapp", "@a:x", 1, 1),
            LinkFact(mon, "whatsapp", "@a:x", 1, 0),
        ],
        orders_created=[(mon, "whatsapp", "@a:x", 2)],
        orders_paid=[(tue, "whatsapp", "@a:x", 2, 1001)],
    )


def test_build_report_slices_and_rates() -> None:
    report = build_report(PERIOD, "EUR", facts(), weekdays_9_to_18(), ["@c:x"])
    t = report.totals
    assert (t.conversations_new, t.conversations, t.missed) == (2, 2, 1)
    assert (t.first_response_median, t.first_response_p90) == (750, 1110)  # [300, 1200]
    assert (t.links_sent, t.links_clicked, t.orders_created, t.orders_paid) == (2, 1, 2, 2)
    assert t.revenue == 1001 and t.average_order_value == 501  # 500.5 rounded half up
    assert t.conversion == 1.0 and t.conversion_with_link == 2.0
    assert t.consent_rate is None and t.optin_rate is None
    assert [s.key for s in report.by_day] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    assert report.by_day[2].metrics == Metrics()
    assert [s.key for s in report.by_adviser] == ["@a:x", "@b:x", "@c:x"]
    a, b, c = (s.metrics for s in report.by_adviser)
    assert (a.conversations, a.first_response_median, a.revenue) == (1, 300, 1001)
    assert (b.conversations, b.first_response_median) == (1, 1200)
    assert c == Metrics()
    assert report.heatmap[0][10] == (1, 0) and report.heatmap[1][11] == (1, 1)
    assert sum(i for hours in report.heatmap for i, _m in hours) == 3


def test_build_report_waits_the_inlined_clock_like_open_clock() -> None:
    """_slice_exchanges inlines OpenClock.seconds: the same waits, also for a reply stored
    before its exchange (0) and outside the period's days (ignored)."""
    schedule = weekdays_9_to_18()
    mon = day_number(date(2026, 11, 2))
    pairs = [
        ("2026-11-02T08:00", "2026-11-02T09:30"),
        ("2026-11-02T12:00", "2026-11-02T11:00"),
        ("2026-11-03T17:59", "2026-11-05T09:01"),
        ("2026-11-04T23:30", "2026-11-09T10:00"),
    ]
    exchanges = [
        (at(a), at(a) + 3600, at(b), "telegram", "@a:x", i) for i, (a, b) in enumerate(pairs)
    ]
    outside = (at("2026-11-05T10:00"), at("2026-11-05T11:00"), None, "telegram", None, 9)
    report = build_report(PERIOD, "EUR", Facts(exchanges=[*exchanges, outside]), schedule)
    clock = OpenClock(schedule, date(2026, 11, 1), date(2026, 11, 10))
    waits = sorted(clock.seconds(at(a), at(b)) for a, b in pairs)
    assert waits == [0, 1800, 32520, 68400]  # Wednesday and Thursday+Friday count whole
    assert report.totals.first_response_median == (waits[1] + waits[2]) / 2
    assert report.by_adviser[0].metrics.conversations == 4
    assert sum(i for hours in report.heatmap for i, _m in hours) == 4
    assert report.by_day[0].metrics.first_response_median == 900  # [0, 1800]
    assert mon == day_number(PERIOD.since)


def test_renderings() -> None:
    report = build_report(PERIOD, "EUR", facts(), weekdays_9_to_18())
    table = render.as_table(report)
    assert "Revenue" in table and "10.01 EUR" in table and "12m 30s" in table
    assert "WhatsApp" in table and "a " in table
    data = json.loads(render.as_json(report))
    assert data["totals"]["revenue"] == 1001 and data["period"]["since"] == "2026-11-02"
    assert len(data["heatmap"]) == 7 and data["heatmap"][1][11] == [1, 1]
    text = render.as_csv(report)
    sections = text.split("\n\n")
    assert [s.splitlines()[0] for s in sections] == [
        "# totals",
        "# by_day",
        "# by_week",
        "# by_adviser",
        "# by_channel",
        "# heatmap",
    ]
    by_day = list(csv.DictReader(io.StringIO(sections[1].split("\n", 1)[1])))
    assert by_day[2]["first_response_median"] == "" and by_day[0]["links_sent"] == "2"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (59.6, "1m 00s"), (3725, "1h 02m"), (2 * 86400 + 7200, "2d 2h")],
)
def test_duration(seconds: float | None, shown: str) -> None:
    assert render.duration(seconds) == shown


def test_money_uses_the_currency_exponent() -> None:
    assert render.money(123456, "EUR") == "1234.56 EUR"
    assert render.money(500, "JPY") == "500 JPY"
    assert render.money(None, "EUR") == "-"
