"""A KPI report as text (pure): a table for the terminal, CSV (every table, each after a line
naming it) and JSON (the whole Report, field names as in hub.kpi.model)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, fields
from typing import Any

from hub.commerce.money import currency_exponent
from hub.kpi.model import Metrics, Report, Slice

FIELDS = [f.name for f in fields(Metrics)]
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def duration(seconds: float | None) -> str:
    """ "4m 05s", "2h 10m", "3d 4h"; "-" for none."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def money(minor: int | None, currency: str) -> str:
    if minor is None:
        return "-"
    exponent = currency_exponent(currency)
    if not exponent:
        return f"{minor} {currency}"
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 10**exponent)
    return f"{sign}{units}.{cents:0{exponent}d} {currency}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


# (field, column heading, how it is shown)
_COLUMNS: list[tuple[str, str, str]] = [
    ("conversations_new", "new", "int"),
    ("conversations", "convs", "int"),
    ("first_response_median", "FRT median", "duration"),
    ("first_response_p90", "FRT p90", "duration"),
    ("missed", "missed", "int"),
    ("links_sent", "links", "int"),
    ("links_clicked", "clicked", "int"),
    ("orders_created", "orders", "int"),
    ("orders_paid", "paid", "int"),
    ("revenue", "revenue", "money"),
    ("average_order_value", "AOV", "money"),
    ("conversion", "conv.", "percent"),
    ("conversion_with_link", "conv. link", "percent"),
    ("consent_rate", "consent", "percent"),
    ("optin_rate", "opt-in", "percent"),
]
_LABELS = {
    "conversations_new": "New conversations",
    "conversations": "Conversations",
    "first_response_median": "First response, median",
    "first_response_p90": "First response, p90",
    "missed": "Missed conversations",
    "links_sent": "Checkout links sent",
    "links_clicked": "Checkout links clicked",
    "orders_created": "Orders created",
    "orders_paid": "Orders paid",
    "revenue": "Revenue",
    "average_order_value": "Average order value",
    "conversion": "Conversion (paid / conversations)",
    "conversion_with_link": "Conversion (paid / conversations with a link)",
    "consent_rate": "Photo consent rate",
    "optin_rate": "Newsletter opt-in rate",
}


def _shown(metrics: Metrics, name: str, how: str, currency: str) -> str:
    value = getattr(metrics, name)
    if how == "duration":
        return duration(value)
    if how == "money":
        return money(value, currency)
    if how == "percent":
        return percent(value)
    return str(value)


def _grid(title: str, slices: list[Slice], currency: str) -> list[str]:
    head = [title, *(heading for _n, heading, _h in _COLUMNS)]
    body = [
        [s.label, *(_shown(s.metrics, n, how, currency) for n, _heading, how in _COLUMNS)]
        for s in slices
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in body] if body else ["(none)"]
    return out


def as_table(report: Report) -> str:
    """The totals block, then the per-adviser and per-channel tables."""
    p = report.period
    lines = [f"KPIs {p.since.isoformat()} to {p.until.isoformat()} ({p.timezone})", ""]
    width = max(len(label) for label in _LABELS.values())
    for name, _heading, how in _COLUMNS:
        shown = _shown(report.totals, name, how, report.currency)
        lines.append(f"{_LABELS[name].ljust(width)}  {shown}")
    lines += ["", *_grid("Adviser", report.by_adviser, report.currency)]
    lines += ["", *_grid("Channel", report.by_channel, report.currency)]
    return "\n".join(lines) + "\n"


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def as_csv(report: Report) -> str:
    """Every table, each after a line "# <name>" and a header; money in minor units,
    durations in seconds, rates 0..1, as in the model."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    tables = [
        ("totals", [Slice("total", "total", report.totals)]),
        ("by_day", report.by_day),
        ("by_week", report.by_week),
        ("by_adviser", report.by_adviser),
        ("by_channel", report.by_channel),
    ]
    for index, (name, slices) in enumerate(tables):
        if index:
            buffer.write("\n")
        buffer.write(f"# {name}\n")
        writer.writerow(["key", "label", *FIELDS])
        for s in slices:
            writer.writerow([s.key, s.label, *(_csv_value(getattr(s.metrics, f)) for f in FIELDS)])
    buffer.write("\n# heatmap\n")
    writer.writerow(["weekday", "hour", "incoming", "missed"])
    for day, hours in enumerate(report.heatmap):
        for hour, (incoming, missed) in enumerate(hours):
            writer.writerow([WEEKDAYS[day], hour, incoming, missed])
    return buffer.getvalue()


def as_dict(report: Report) -> dict[str, Any]:
    data = asdict(report)
    data["period"]["since"] = report.period.since.isoformat()
    data["period"]["until"] = report.period.until.isoformat()
    data["heatmap"] = [[list(cell) for cell in hours] for hours in report.heatmap]
    return data


def as_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2, ensure_ascii=False) + "\n"
