"""The dashboard's tables as CSV: one file per table of a report (`/dashboard/export/
<table>.csv`). The figures as the model has them and as `hub report --format csv` writes
them (hub.kpi.render): money in minor units of the shop's currency (the totals say which),
durations in seconds, rates 0..1, empty where a figure has no meaning; column names are the
report's field names, weekdays Mon..Sun. Pure.

A label that a spreadsheet would take for a formula (a display name starting with "=", "+",
"-", "@") gets a leading apostrophe: opening an export must not run anything. Keys stay as
they are (Matrix ids start with "@"): programs read them, and the hub or the homeserver made
them, not whoever picked a display name.
"""

from __future__ import annotations

import csv
import io
from dataclasses import fields
from typing import Any

from hub.kpi.model import Metrics, Report, Slice

METRIC_FIELDS = tuple(f.name for f in fields(Metrics))
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # as hub.kpi.render
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _metrics_row(metrics: Metrics) -> list[str]:
    values = (getattr(metrics, name) for name in METRIC_FIELDS)
    return ["" if value is None else str(value) for value in values]


def _slices(slices: list[Slice], writer: Any) -> None:
    writer.writerow(["key", "label", *METRIC_FIELDS])
    for s in slices:
        writer.writerow([s.key, _text(s.label), *_metrics_row(s.metrics)])


def report_csv(report: Report, table: str) -> str:
    """One table of the report as CSV text; KeyError for a table that does not exist."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    period = report.period
    if table == "totals":
        writer.writerow(["since", "until", "currency", *METRIC_FIELDS])
        writer.writerow(
            [
                period.since.isoformat(),
                period.until.isoformat(),
                report.currency,
                *_metrics_row(report.totals),
            ]
        )
    elif table in ("by_day", "by_week", "by_adviser", "by_channel"):
        _slices(getattr(report, table), writer)
    elif table == "heatmap":
        writer.writerow(["weekday", "hour", "incoming", "missed"])
        for weekday, row in enumerate(report.heatmap):
            for hour, (incoming, missed) in enumerate(row):
                writer.writerow([WEEKDAYS[weekday], hour, incoming, missed])
    else:
        raise KeyError(table)
    return out.getvalue()
