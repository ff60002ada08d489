"""What the dashboard shows of a KPI report (hub.kpi.model.Report): the period asked for, the
figures written the way the shop's locale writes them, the charts' data for dashboard.js and
the heatmap's cells. No I/O: hub.http.dashboard renders it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from babel.dates import format_date, get_day_names
from babel.numbers import format_decimal, format_percent

from hub.commerce.money import Money, currency_exponent, format_money
from hub.i18n import N_, _
from hub.kpi.model import Metrics, Period, Report, Slice

PRESETS = (7, 30, 90)  # "last N days", today included
DEFAULT_DAYS = 30
MAX_DAYS = 366  # a custom period up to a year: more is a report, not a glance
NONE = "–"  # a figure without meaning (no conversation, no order)
HEAT_LEVELS = 5  # shades of the heatmap's cells besides "none"

TABLES = ("totals", "by_day", "by_week", "by_adviser", "by_channel", "heatmap")


class PeriodError(ValueError):
    """The since/until asked for cannot be shown; the text says why, for a person."""


@dataclass(frozen=True)
class Choice:
    period: Period
    days: int | None  # the preset chosen, None for a custom since/until


def choose_period(query: Mapping[str, str], today: date, timezone: str) -> Choice:
    """The period of `?days=N` or `?since=YYYY-MM-DD&until=YYYY-MM-DD` (default: the last
    30 days). Raises PeriodError for what cannot be shown."""
    since_text, until_text = query.get("since", "").strip(), query.get("until", "").strip()
    if since_text or until_text:
        try:
            since = date.fromisoformat(since_text) if since_text else None
            until = date.fromisoformat(until_text) if until_text else today
        except ValueError:
            raise PeriodError(_("Please give the dates as YYYY-MM-DD.")) from None
        if since is None:
            since = until - timedelta(days=DEFAULT_DAYS - 1)
        if since > until:
            raise PeriodError(_("The first day must not be after the last day."))
        if (until - since).days + 1 > MAX_DAYS:
            raise PeriodError(_("A period can be at most {days} days long.").format(days=MAX_DAYS))
        return Choice(Period(since, until, timezone), None)
    days = DEFAULT_DAYS
    if "days" in query:
        try:
            days = int(query["days"])
        except ValueError:
            days = 0
        if days not in PRESETS:
            raise PeriodError(_("Please choose one of the periods offered."))
    return Choice(Period(today - timedelta(days=days - 1), today, timezone), days)


def period_query(choice: Choice) -> str:
    """The query string that asks for the same period again (export links)."""
    if choice.days is not None:
        return f"days={choice.days}"
    return f"since={choice.period.since.isoformat()}&until={choice.period.until.isoformat()}"


class Figures:
    """Numbers, amounts, durations and rates as the shop's locale writes them."""

    def __init__(self, locale: str, currency: str) -> None:
        self.locale = locale
        self.currency = currency

    def number(self, value: int | None) -> str:
        return NONE if value is None else format_decimal(value, locale=self.locale)

    def money(self, minor: int | None) -> str:
        if minor is None:
            return NONE
        return format_money(Money(minor, self.currency), self.locale)

    def rate(self, value: float | None) -> str:
        if value is None:
            return NONE
        # One decimal at most, in the locale's own pattern ("12,3 %" in German, "12.3%"):
        # a fixed pattern would lose the locale's spacing.
        return format_percent(round(value, 3), locale=self.locale, decimal_quantization=False)

    def duration(self, seconds: float | None) -> str:
        """A response time people compare at a glance: two units at most."""
        if seconds is None:
            return NONE
        total = round(seconds)
        if total < 60:
            return _("{seconds} s").format(seconds=total)
        minutes, secs = divmod(total, 60)
        if minutes < 60:
            return _("{minutes} min {seconds} s").format(minutes=minutes, seconds=secs)
        hours, minutes = divmod(minutes, 60)
        return _("{hours} h {minutes} min").format(hours=self.number(hours), minutes=minutes)

    def major(self, minor: int) -> float:
        """An amount in the currency's major unit, for a chart's axis (not for display)."""
        exponent: int = currency_exponent(self.currency)
        return minor / 10.0**exponent


# The columns of the tables per adviser, channel and week: (Metrics field, heading, kind).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("conversations", N_("Conversations"), "number"),
    ("first_response_median", N_("First response (median)"), "duration"),
    ("missed", N_("Missed"), "number"),
    ("links_sent", N_("Links sent"), "number"),
    ("links_clicked", N_("Links clicked"), "number"),
    ("orders_paid", N_("Orders paid"), "number"),
    ("revenue", N_("Revenue"), "money"),
    ("conversion", N_("Conversion"), "rate"),
)

# The big numbers on top: (Metrics field, label, kind).
TILES: tuple[tuple[str, str, str], ...] = (
    ("conversations", N_("Conversations"), "number"),
    ("first_response_median", N_("First response (median)"), "duration"),
    ("missed", N_("Missed"), "number"),
    ("links_sent", N_("Links sent"), "number"),
    ("links_clicked", N_("Links clicked"), "number"),
    ("conversion", N_("Conversion"), "rate"),
    ("average_order_value", N_("Average order value"), "money"),
    ("revenue", N_("Revenue"), "money"),
)


def _show(figures: Figures, metrics: Metrics, name: str, kind: str) -> str:
    value = getattr(metrics, name)
    shown: str = getattr(figures, kind)(value)
    return shown


def channel_label(s: Slice) -> str:
    """The channel's name in the shop's language (the report's labels are the catalogue's
    English ids: "Web chat" is "Webchat" in German)."""
    return _(s.label)


def week_label(s: Slice) -> str:
    """ "KW 45/2026" in German: the week's key is the ISO week ("2026-W45")."""
    year, _sep, week = s.key.partition("-W")
    if not (year.isdigit() and week.isdigit()):
        return s.label
    # TRANSLATORS: a calendar week; German "KW {week}/{year}".
    return _("Week {week}/{year}").format(week=int(week), year=year)


def _rows(
    figures: Figures, slices: list[Slice], label: Any = lambda s: s.label
) -> list[dict[str, Any]]:
    return [
        {
            "key": s.key,
            "label": label(s),
            "cells": [_show(figures, s.metrics, name, kind) for name, _t, kind in COLUMNS],
        }
        for s in slices
    ]


def heatmap_rows(report: Report, locale: str) -> list[dict[str, Any]]:
    """Seven rows (Monday first) of 24 cells: incoming conversations, missed ones, a shade
    0..HEAT_LEVELS relative to the busiest hour, and a sentence for the tooltip."""
    days = get_day_names("abbreviated", locale=locale)
    long_days = get_day_names("wide", locale=locale)
    grid = report.heatmap or [[(0, 0)] * 24 for _day in range(7)]
    busiest = max((incoming for row in grid for incoming, _m in row), default=0)
    rows = []
    for weekday, row in enumerate(grid):
        cells = []
        for hour, (incoming, missed) in enumerate(row):
            level = 0 if not incoming else max(1, round(HEAT_LEVELS * incoming / busiest))
            title = _("{day} {hour}:00–{next}:00: {incoming} incoming, {missed} missed").format(
                day=long_days[weekday], hour=hour, next=hour + 1, incoming=incoming, missed=missed
            )
            cells.append({"incoming": incoming, "missed": missed, "level": level, "title": title})
        rows.append({"day": days[weekday], "cells": cells})
    return rows


def chart_data(report: Report, figures: Figures) -> dict[str, Any]:
    """What dashboard.js draws: JSON in the page (a data block, no inline script)."""
    return {
        "locale": figures.locale.replace("_", "-"),
        "currency": figures.currency,
        "days": {
            "labels": [s.label for s in report.by_day],
            "revenue": [figures.major(s.metrics.revenue) for s in report.by_day],
            "conversations": [s.metrics.conversations for s in report.by_day],
        },
        "advisers": {
            "labels": [s.label for s in report.by_adviser],
            "revenue": [figures.major(s.metrics.revenue) for s in report.by_adviser],
            "conversations": [s.metrics.conversations for s in report.by_adviser],
        },
        "texts": {"revenue": _("Revenue"), "conversations": _("Conversations")},
    }


def overview(report: Report, locale: str) -> dict[str, Any]:
    """The template values of the overview page for a report."""
    figures = Figures(locale, report.currency)
    period = report.period
    return {
        "period_text": _("{since} to {until}").format(
            since=format_date(period.since, "medium", locale=locale),
            until=format_date(period.until, "medium", locale=locale),
        ),
        "since": period.since.isoformat(),
        "until": period.until.isoformat(),
        "tiles": [
            {"name": name, "label": _(label), "value": _show(figures, report.totals, name, kind)}
            for name, label, kind in TILES
        ],
        "columns": [_(heading) for _n, heading, _k in COLUMNS],
        "advisers": _rows(figures, report.by_adviser),
        "channels": _rows(figures, report.by_channel, channel_label),
        "weeks": _rows(figures, report.by_week, week_label),
        "heatmap": heatmap_rows(report, locale),
        "hours": list(range(24)),
        "charts": chart_data(report, figures),
        "has_data": bool(report.totals.conversations or report.by_day or report.by_adviser),
    }
