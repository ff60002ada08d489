"""What a KPI report is: the contract between the computation (hub.kpi.compute over the
queries of hub.db.kpi), the dashboard (hub.http.dashboard), the CSV export and
`hub report`. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True)
class Period:
    since: date  # first day, in the shop's time zone
    until: date  # last day, inclusive
    timezone: str


@dataclass(frozen=True)
class Metrics:
    """The figures of one slice (the whole period, a day, a week, an adviser, a channel).
    Durations in seconds; money in minor units of the shop's currency; rates 0..1; None
    where a figure has no meaning (no conversation, no order)."""

    conversations_new: int = 0
    conversations: int = 0  # with a customer message in the slice
    first_response_median: float | None = None  # seconds, opening hours only
    first_response_p90: float | None = None
    missed: int = 0
    links_sent: int = 0
    links_clicked: int = 0
    orders_created: int = 0
    orders_paid: int = 0
    revenue: int = 0
    average_order_value: int | None = None
    conversion: float | None = None  # paid orders / conversations
    conversion_with_link: float | None = None  # paid orders / conversations that got a link
    consent_rate: float | None = None  # photo consents given / asked
    optin_rate: float | None = None  # newsletter opt-ins confirmed / asked


@dataclass(frozen=True)
class Slice:
    key: str  # "2026-11-03", "2026-W45", "@anna:shop.example", "whatsapp"
    label: str  # what a person reads: a date, "KW 45", a display name, "WhatsApp"
    metrics: Metrics


@dataclass(frozen=True)
class Report:
    period: Period
    currency: str
    totals: Metrics
    by_day: list[Slice] = field(default_factory=list)
    by_week: list[Slice] = field(default_factory=list)
    by_adviser: list[Slice] = field(default_factory=list)
    by_channel: list[Slice] = field(default_factory=list)
    # [weekday 0=Monday][hour 0..23] -> (incoming conversations, missed), shop's time zone
    heatmap: list[list[tuple[int, int]]] = field(default_factory=list)
